"""Fixed-window packs (data.pack_sample_into_one=True, and every validation batch) run attention
per seq_len window without a mask: the same loss, gradients and validation loss as the segment
path, on micro_bsz times smaller attention rows."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.data import PackedDataset
from internevo_jax.data.loader import ValidSet
from internevo_jax.data.packing import stack_packs
from internevo_jax.model import attention_choice, build_model
from internevo_jax.model import block as block
from internevo_jax.parallel import mesh_context, parallel_env, put_batch
from internevo_jax.trainer.build import build_trainer, create_model
from internevo_jax.trainer.evaluate import evaluate_sets, make_eval_step
from internevo_jax.trainer.step import MODEL_INPUTS, make_grads_fn

VOCAB, SEQ, MICRO_BSZ, HEADS = 97, 16, 3, 4


def windows_config(pack_sample_into_one=True, parallel=None, **model):
    return config_from_dict(
        {
            "model": {
                "num_attention_heads": HEADS,
                "hidden_size": 32,
                "num_layers": 2,
                "vocab_size": VOCAB,
                "mlp_ratio": 2.0,
                "dtype": "torch.float32",
                **model,
            },
            "data": dict(
                seq_len=SEQ,
                micro_num=2,
                micro_bsz=MICRO_BSZ,
                total_steps=10,
                pack_sample_into_one=pack_sample_into_one,
                valid_every=5,
            ),
            "parallel": parallel or dict(zero1=1),
        },
        log=lambda *_: None,
    )


class RandomSamples:
    """Samples of 3..29 random tokens: they cross the window edges, as real packs do."""

    type_id = 0

    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        self.samples = [
            rng.integers(1, VOCAB, size=int(rng.integers(3, 30))).astype(np.int64) for _ in range(n)
        ]
        self.lengths = np.array([len(s) for s in self.samples])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def train_batch(micro_num=2, rows=2):
    """[micro_num, rows, seq_len * micro_bsz] packs of the real packer with pack_sample_into_one=True."""
    packs = PackedDataset(
        RandomSamples(60), seq_len=SEQ, packed_length=SEQ * MICRO_BSZ, pack_sample_into_one=True
    )
    stacked = stack_packs([packs[i] for i in range(micro_num * rows)])
    return {k: v.reshape(micro_num, rows, -1) for k, v in stacked.items()}


def segment_path(model):
    """The same model with the windows unknown to it: attention follows the segment ids."""
    return model.clone(args=dataclasses.replace(model.args, fixed_window_len=0))


def plain(params):
    return jax.tree.map(
        lambda p: p.unbox() if hasattr(p, "unbox") else p, params, is_leaf=lambda p: hasattr(p, "unbox")
    )


def test_config_sets_the_window():
    assert build_model(windows_config()).args.fixed_window_len == SEQ
    assert build_model(windows_config(pack_sample_into_one=False)).args.fixed_window_len == 0
    args = build_model(windows_config()).args
    assert [args.window_for(t) for t in (SEQ, 3 * SEQ, 2 * SEQ + 4, SEQ // 2, None)] == [
        SEQ,
        SEQ,
        None,
        None,
        None,
    ]


def test_train_loss_and_gradients_equal_the_segment_path():
    model = build_model(windows_config())
    batch = train_batch()
    micro = {k: v[0] for k, v in batch.items()}
    params = plain(model.init(jax.random.key(0), *(micro[k] for k in MODEL_INPUTS))["params"])
    g_win, loss_win, stats_win, _ = jax.jit(make_grads_fn(model))(params, batch, jnp.float32(1.0))
    g_seg, loss_seg, stats_seg, _ = jax.jit(make_grads_fn(segment_path(model)))(
        params, batch, jnp.float32(1.0)
    )
    np.testing.assert_allclose(loss_win, loss_seg, rtol=1e-6)
    np.testing.assert_array_equal(stats_win["correct"], stats_seg["correct"])
    for a, b in zip(jax.tree.leaves(g_win), jax.tree.leaves(g_seg)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_win)) > 1e-3


@pytest.mark.parametrize("mode", ["mtp", "isp"])
def test_windows_keep_their_shardings(mode):
    """Data-parallel rows and a tensor split (by heads, or by sequence around attention for isp)
    through the reshape to windows: the same loss and gradients as the unsharded segment path."""
    cfg = windows_config(parallel=dict(zero1=1, tensor=dict(size=2, mode=mode)))
    env = parallel_env(cfg, jax.devices()[:4])
    assert env.sizes.dp == 2
    model = build_model(cfg)
    batch = train_batch(micro_num=1, rows=2)
    params = plain(model.init(jax.random.key(1), *(batch[k][0] for k in MODEL_INPUTS))["params"])
    g_ref, loss_ref, _, _ = jax.jit(make_grads_fn(segment_path(model)))(params, batch, jnp.float32(1.0))
    with mesh_context(env.mesh, env.rules):
        g, loss, _, _ = jax.jit(make_grads_fn(model))(params, put_batch(batch, env.mesh, 2), jnp.float32(1.0))
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.fixture
def attention_calls(monkeypatch):
    """(q shape, segment ids given, the case the dispatcher was asked about) of every attention call."""
    seen = []
    real = block.choice_for_args

    def recording(args, *, seq_len, has_segments, platform=None):
        choice = real(args, seq_len=seq_len, has_segments=has_segments, platform=platform)

        def fn(q, k, v, segment_ids, **kw):
            seen.append((q.shape, segment_ids is not None, (seq_len, has_segments)))
            return choice.fn(q, k, v, segment_ids, **kw)

        return dataclasses.replace(choice, fn=fn)

    monkeypatch.setattr(block, "choice_for_args", recording)
    return seen


def test_attention_runs_on_the_windows(attention_calls):
    model = build_model(windows_config())
    micro = {k: v[0] for k, v in train_batch().items()}  # [rows=2, 48]
    inputs = [micro[k] for k in MODEL_INPUTS]
    params = model.init(jax.random.key(0), *inputs)["params"]
    attention_calls.clear()
    model.apply({"params": params}, *inputs)
    head_dim = 32 // HEADS
    assert attention_calls == [((2 * MICRO_BSZ, SEQ, HEADS, head_dim), False, (SEQ, False))] * 2  # per layer
    attention_calls.clear()
    segment_path(model).apply({"params": params}, *inputs)
    assert attention_calls == [((2, SEQ * MICRO_BSZ, HEADS, head_dim), True, (SEQ * MICRO_BSZ, True))] * 2
    attention_calls.clear()
    model.apply({"params": params}, micro["input_ids"])  # no segment ids: one sequence per row, never cut
    assert attention_calls[0][0] == (2, SEQ * MICRO_BSZ, HEADS, head_dim)


def valid_set(rows=1):
    """Validation samples shorter and longer than seq_len: padded or cut windows (ValidSet)."""
    rng = np.random.default_rng(5)
    samples = [
        rng.integers(1, VOCAB, size=int(n)).astype(np.int64) for n in rng.integers(4, 2 * SEQ, size=24)
    ]
    return ValidSet(
        "val",
        samples,
        seq_len=SEQ,
        micro_bsz=MICRO_BSZ,
        valid_micro_num=2,
        dp_size=rows,
        dp_ranks=range(rows),
    )


def test_validation_loss_equals_the_segment_path(attention_calls):
    # Validation rows are windows whatever pack_sample_into_one says.
    cfg = windows_config(pack_sample_into_one=False)
    trainer = build_trainer(cfg, devices=jax.devices()[:1])
    assert trainer.model.args.fixed_window_len == 0
    sets = {"val": valid_set()}
    assert (sets["val"].get_batch(0)["segment_ids"] == 0).any()  # padding after the real tokens

    def run(window_len):
        step = make_eval_step(
            trainer.model, trainer.mesh, trainer.rules, trainer.shardings.params, window_len=window_len
        )
        return evaluate_sets(step, trainer.state.params, sets, trainer.mesh, 1)

    attention_calls.clear()
    windowed = run(SEQ)
    assert {c[0][:2] for c in attention_calls} == {(MICRO_BSZ, SEQ)}
    segments = run(None)
    assert windowed.keys() == segments.keys()
    for key in windowed:
        assert windowed[key] == pytest.approx(segments[key], rel=1e-6), key
    assert trainer.evaluate(sets)["val/val_loss"] == pytest.approx(windowed["val/val_loss"], rel=1e-7)


def test_choice_reason_names_the_windows():
    cfg = windows_config()
    train = attention_choice(cfg, "cpu", seq_len=SEQ * MICRO_BSZ)
    assert train.name == "xla"
    assert train.reason.startswith(
        f"rows of {SEQ * MICRO_BSZ} tokens run as {MICRO_BSZ} fixed {SEQ}-token windows"
    )
    gpu = windows_config(attn_impl="auto", dtype="torch.bfloat16")
    assert "built-in causal mask" in attention_choice(gpu, "gpu", seq_len=SEQ * MICRO_BSZ).reason
    packed = windows_config(pack_sample_into_one=False, dtype="torch.bfloat16")
    assert "segment offsets" in attention_choice(packed, "gpu", seq_len=SEQ * MICRO_BSZ).reason
    windows = attention_choice(packed, "gpu", seq_len=SEQ * MICRO_BSZ, window_len=SEQ)
    assert "fixed" in windows.reason and "built-in causal mask" in windows.reason


def test_start_up_log_says_which_backend_and_why(package_log):
    create_model(windows_config())
    (line,) = [r.getMessage() for r in package_log.records]
    assert line.startswith(
        f"model INTERNLM, compute dtype float32, attention backend xla: rows of {SEQ * MICRO_BSZ} tokens run as "
        f"{MICRO_BSZ} fixed {SEQ}-token windows without a mask; auto on cpu: plain XLA ops run on every platform"
    )
    assert "skipped cudnn: cuDNN attention needs an NVIDIA GPU" in line  # why the faster ones do not run
    package_log.clear()
    create_model(windows_config(pack_sample_into_one=False))
    train, valid = [r.getMessage() for r in package_log.records]
    assert "attention backend xla: auto on cpu: plain XLA ops run on every platform" in train
    assert valid.startswith(
        "validation attention backend xla: rows of 48 tokens run as 3 fixed 16-token windows"
    )
