"""The compiled train step: accumulation equivalence and data-parallel equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.config import config_from_dict, parallel_sizes
from internevo_jax.model import build_model
from internevo_jax.optim import DynamicLossScaler, build_optimizer
from internevo_jax.parallel import build_mesh, logical_axis_rules, put_batch
from internevo_jax.trainer import create_train_state, make_train_step
from internevo_jax.trainer.step import make_grads_fn

VOCAB = 97


def tiny_config(micro_num=1):
    return config_from_dict(
        {
            "model": dict(
                num_attention_heads=4,
                hidden_size=32,
                num_layers=2,
                vocab_size=VOCAB,
                mlp_ratio=2.0,
                dtype="torch.float32",
                use_flash_attn=False,
            ),
            "data": dict(seq_len=16, micro_num=micro_num, micro_bsz=1, total_steps=10),
            "parallel": dict(zero1=1),
            "adam": dict(lr=1e-3),
        },
        log=lambda *_: None,
    )


def segmented_chunks(rng, n_chunks, seq_len):
    """n_chunks self-contained chunks of seq_len tokens with two segments each and equal label counts."""
    ids, labels, pos, seg = [], [], [], []
    for _ in range(n_chunks):
        cut = int(rng.integers(3, seq_len - 3))
        toks = rng.integers(0, VOCAB, size=seq_len)
        lab = np.concatenate([toks[1:cut], [-100], toks[cut + 1 :], [-100]])
        ids.append(toks)
        labels.append(lab)
        pos.append(np.concatenate([np.arange(cut), np.arange(seq_len - cut)]))
        seg.append(np.concatenate([np.ones(cut), 2 * np.ones(seq_len - cut)]))
    return [np.stack(x).astype(np.int32) for x in (ids, labels, pos, seg)]


def test_micro_num_accumulation_equals_one_big_micro_batch():
    """micro_num=4 x micro_bsz=1 gives the gradients of micro_num=1 x micro_bsz=4 on the same tokens."""
    cfg = tiny_config()
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    seq = cfg.data.seq_len
    ids, labels, pos, seg = segmented_chunks(rng, 4, seq)
    keys = ("input_ids", "labels", "positions", "segment_ids")
    # [micro_num=4, rows=1, seq] vs [micro_num=1, rows=1, 4*seq]; segment ids renumbered in the big pack
    as_micro = {k: v[:, None, :] for k, v in zip(keys, (ids, labels, pos, seg))}
    big_seg = (seg + 2 * np.arange(4)[:, None]).reshape(1, 1, -1)
    as_pack = {k: v.reshape(1, 1, -1) for k, v in zip(keys, (ids, labels, pos, seg))}
    as_pack["segment_ids"] = big_seg.astype(np.int32)

    params = model.init(jax.random.key(0), ids[:1], pos[:1], seg[:1])["params"]
    params = jax.tree.map(
        lambda p: p.unbox() if hasattr(p, "unbox") else p, params, is_leaf=lambda p: hasattr(p, "unbox")
    )
    grads_fn = jax.jit(make_grads_fn(model))
    g_micro, losses_micro, _, _ = grads_fn(params, as_micro, jnp.float32(1.0))
    g_pack, losses_pack, _, _ = grads_fn(params, as_pack, jnp.float32(1.0))
    assert float(losses_micro.mean()) == pytest.approx(float(losses_pack.mean()), rel=1e-6)
    flat_m, flat_p = jax.tree.leaves(g_micro), jax.tree.leaves(g_pack)
    for a, b in zip(flat_m, flat_p):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-7)
    # a wrong accumulation (sum instead of mean) would differ by 4x
    assert max(float(jnp.abs(a).max()) for a in flat_m) > 1e-4


def run_steps(cfg, devices, batches):
    sizes = parallel_sizes(cfg, len(devices))
    mesh = build_mesh(sizes, devices)
    rules = logical_axis_rules(cfg)
    model = build_model(cfg)
    tx, _, _ = build_optimizer(cfg)
    scaler = DynamicLossScaler.from_config(cfg)
    state, shardings = create_train_state(model, tx, scaler, mesh, rules, jax.random.key(3), cfg.data.seq_len)
    step = make_train_step(model, tx, scaler, mesh, rules, shardings)
    losses = []
    for batch in batches:
        state, metrics = step(state, put_batch(batch, mesh, batch["input_ids"].shape[1]))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def test_data_parallel_over_8_devices_equals_one_device():
    assert len(jax.devices()) == 8, "tests/conftest.py sets 8 fake CPU devices"
    cfg = tiny_config(micro_num=2)
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(3):
        ids, labels, pos, seg = segmented_chunks(rng, 2 * 8, cfg.data.seq_len)
        shape = (2, 8, cfg.data.seq_len)
        batches.append(
            {
                "input_ids": ids.reshape(shape),
                "labels": labels.reshape(shape),
                "positions": pos.reshape(shape),
                "segment_ids": seg.reshape(shape),
            }
        )
    losses_1, params_1 = run_steps(cfg, jax.devices()[:1], batches)
    losses_8, params_8 = run_steps(cfg, jax.devices(), batches)
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params_8), jax.tree.leaves(params_1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert losses_1[-1] < losses_1[0]


@pytest.mark.parametrize("checkpoint", [0.5, 1.0, True])
def test_activation_checkpointing_keeps_loss_and_grads(checkpoint):
    """model.checkpoint (0, a fraction, all) changes memory, not numbers."""

    def grads_for(value):
        cfg = config_from_dict(
            {
                "model": dict(
                    num_attention_heads=4,
                    hidden_size=32,
                    num_layers=2,
                    vocab_size=VOCAB,
                    mlp_ratio=2.0,
                    dtype="torch.float32",
                    use_flash_attn=False,
                    checkpoint=value,
                ),
                "data": dict(seq_len=16, micro_num=2, micro_bsz=1),
            },
            log=lambda *_: None,
        )
        model = build_model(cfg)
        ids, labels, pos, seg = segmented_chunks(np.random.default_rng(4), 2, 16)
        batch = {
            "input_ids": ids[:, None],
            "labels": labels[:, None],
            "positions": pos[:, None],
            "segment_ids": seg[:, None],
        }
        params = model.init(jax.random.key(0), ids[:1], pos[:1], seg[:1])["params"]
        params = jax.tree.map(
            lambda p: p.unbox() if hasattr(p, "unbox") else p, params, is_leaf=lambda p: hasattr(p, "unbox")
        )
        return cfg, jax.jit(make_grads_fn(model))(params, batch, jnp.float32(1.0))

    cfg0, (g0, loss0, _, _) = grads_for(False)
    cfg, (g, loss, _, _) = grads_for(checkpoint)
    assert cfg0.model.checkpoint_layers == 0 and cfg.model.checkpoint_layers == (
        1 if checkpoint == 0.5 else 2
    )
    np.testing.assert_allclose(np.asarray(loss), np.asarray(loss0), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g0)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
