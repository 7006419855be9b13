"""The chunked cross-entropy (trainer/chunked_loss.py, loss.ce_chunk_size): the loss, the token
statistics and the gradients of the full-logits path, in the train step (scan and pipeline),
in validation, and the memory it saves on the 1.5B benchmark model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.config import ConfigError, config_from_dict, load_config, parallel_sizes
from internevo_jax.model import build_model
from internevo_jax.optim import DynamicLossScaler, build_optimizer
from internevo_jax.parallel import build_mesh, logical_axis_rules, put_batch
from internevo_jax.trainer import create_train_state, make_train_step
from internevo_jax.trainer.build import build_trainer
from internevo_jax.trainer.chunked_loss import chunked_cross_entropy
from internevo_jax.trainer.evaluate import make_eval_step
from internevo_jax.trainer.loss import cross_entropy, token_stats

REAL_VOCAB = 103168  # InternLM's vocabulary (configs/bench_1p5b.py)
NUM_TYPES = 3


def real_vocab_case(dtype=jnp.float32, rows=3, length=97, hidden=32, seed=0):
    """hidden [rows, length, hidden], kernel [hidden, 103168], labels with ignored tokens (row 1
    all ignored), some labels set to the argmax so `correct` counts, type ids."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(rows, length, hidden)).astype(np.float32)
    k = (rng.normal(size=(hidden, REAL_VOCAB)) * 0.3).astype(np.float32)
    h, k = jnp.asarray(h, dtype), jnp.asarray(k, dtype)
    with jax.default_matmul_precision("highest"):
        argmax = np.asarray(
            jnp.argmax(jnp.einsum("btd,dv->btv", h.astype(jnp.float32), k.astype(jnp.float32)), -1)
        )
    labels = rng.integers(0, REAL_VOCAB, size=(rows, length))
    hit = rng.random((rows, length)) < 0.3
    labels = np.where(hit, argmax, labels)
    labels[0, ::5] = -100
    labels[1, :] = -100
    labels[2, -7:] = -100
    types = rng.integers(0, NUM_TYPES, size=(rows, length))
    return h, k, jnp.asarray(labels, jnp.int32), jnp.asarray(types, jnp.int32)


def plain_loss(h, k, labels, types, smoothing):
    """The full-logits path: the head's matmul, then cross_entropy and token_stats."""
    logits = jnp.einsum("btd,dv->btv", h, k)
    return cross_entropy(logits, labels, label_smoothing=smoothing), token_stats(
        logits, labels, types, NUM_TYPES
    )


def fused_loss(h, k, labels, types, smoothing, chunk=40, precision="highest"):
    return chunked_cross_entropy(
        h,
        k,
        labels,
        types,
        num_types=NUM_TYPES,
        label_smoothing=smoothing,
        chunk_size=chunk,
        precision=precision,
    )


def scaled_grads(fn, scale):
    """(loss, stats), d(loss * scale)/d(hidden, kernel): a cotangent != 1, as the loss scale gives."""

    def f(h, k, labels, types):
        loss, stats = fn(h, k, labels, types)
        return loss * scale, (loss, stats)

    return jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))


def float64_grads(h, k, labels, smoothing, scale):
    """d(loss * scale)/d(hidden, kernel) in float64 (numpy), from the formula: the truth both fp32
    paths are measured against."""
    h, k, labels = np.asarray(h, np.float64), np.asarray(k, np.float64), np.asarray(labels)
    z = h @ k
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    valid = labels != -100
    rows, length = np.nonzero(valid)
    dz = p - smoothing / k.shape[1]
    dz[rows, length, labels[rows, length]] -= 1.0 - smoothing
    weight = valid / np.maximum(valid.sum(axis=-1, keepdims=True), 1) / labels.shape[0] * scale
    dz *= weight[..., None]
    return dz @ k.T, np.einsum("rtd,rtv->dv", h, dz)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_stats_and_gradients_equal_the_full_logits(smoothing):
    """fp32 on the real vocabulary: 97 tokens per row in chunks of 40 (evened out to 3 chunks of 33,
    2 padded tokens),
    ignored labels and a row without any: loss, stats and gradients of the full-logits path.

    A d_hidden entry is a sum over 103168 classes, so fp32 accumulation alone leaves either path
    ~1.5e-6 of the largest entry away from the float64 value: the gradients are compared to rtol
    1e-6 above that floor (atol 5e-6 of the largest entry), and both to the float64 gradient."""
    h, k, labels, types = real_vocab_case()
    with jax.default_matmul_precision("highest"):
        want_grads, (want_loss, want_stats) = scaled_grads(lambda *a: plain_loss(*a, smoothing), 8.0)(
            h, k, labels, types
        )
        got_grads, (got_loss, got_stats) = scaled_grads(lambda *a: fused_loss(*a, smoothing), 8.0)(
            h, k, labels, types
        )
        primal_loss, primal_stats = jax.jit(lambda *a: fused_loss(*a, smoothing))(h, k, labels, types)

    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(primal_loss, want_loss, rtol=1e-6)
    assert sorted(got_stats) == sorted(want_stats) == sorted(primal_stats)
    for key in want_stats:
        np.testing.assert_allclose(got_stats[key], want_stats[key], rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(primal_stats[key], want_stats[key], rtol=1e-6, err_msg=key)
    assert 0 < float(want_stats["correct"]) < float(want_stats["tokens"])
    assert float(want_stats["tokens"]) == 97 - 20 + 97 - 7  # row 1 has no valid label
    exact = float64_grads(h, k, labels, smoothing, 8.0)
    for got, want, truth, name in zip(got_grads, want_grads, exact, ("hidden", "kernel")):
        top = float(np.abs(truth).max())
        assert top > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=5e-6 * top, err_msg=name)
        np.testing.assert_allclose(got, truth, rtol=1e-6, atol=3e-6 * top, err_msg=name)
        np.testing.assert_allclose(want, truth, rtol=1e-6, atol=3e-6 * top, err_msg=name)
    assert float(jnp.abs(got_grads[0][1]).max()) == 0.0  # the all-ignored row gets no gradient


def test_fp16_gradients_do_not_underflow():
    """fp16 compute on the real vocabulary: a per-token gradient p / (rows * count) of ~1e-5 / 300
    is below fp16's smallest number, so the chunks form it scaled by rows * T; with the loss
    scale as cotangent the gradients match the fp32 ones to fp16 accuracy."""
    h, k, labels, types = real_vocab_case(jnp.float16)
    scale = 2.0**12
    with jax.default_matmul_precision("highest"):
        ref_grads, _ = scaled_grads(lambda *a: plain_loss(*a, 0.1), 1.0)(
            h.astype(jnp.float32), k.astype(jnp.float32), labels, types
        )
        got_grads, (loss, _) = scaled_grads(lambda *a: fused_loss(*a, 0.1, precision=None), scale)(
            h, k, labels, types
        )
    assert all(g.dtype == jnp.float16 for g in got_grads)
    for got, want in zip(got_grads, ref_grads):
        got = np.asarray(got, np.float32) / scale
        err = np.linalg.norm(got - np.asarray(want)) / np.linalg.norm(np.asarray(want))
        assert err < 2e-3, err  # 7.6e-3 for d_hidden when dz is cast unscaled


# -- the train step --------------------------------------------------------------------------------

VOCAB, SEQ, MICRO_BSZ, MICRO_NUM = 97, 16, 3, 2  # rows of 48 tokens: chunks of 20 pad 12


def tiny_config(chunk: int, dtype: str = "torch.float32", parallel: dict | None = None, **model):
    model_dict = dict(
        num_attention_heads=4,
        hidden_size=32,
        num_layers=2,
        vocab_size=VOCAB,
        mlp_ratio=2.0,
        multiple_of=32,
        dtype=dtype,
        use_flash_attn=False,
        embed_grad_scale=0.5,
    )
    model_dict.update(model)
    return config_from_dict(
        {
            "model": model_dict,
            "data": dict(seq_len=SEQ, micro_num=MICRO_NUM, micro_bsz=MICRO_BSZ, total_steps=10),
            "parallel": parallel or dict(zero1=1),
            "adam": dict(lr=1e-3),
            "hybrid_zero_optimizer": dict(clip_grad_norm=1.0),
            "loss": dict(label_smoothing=0.1, ce_chunk_size=chunk),
        },
        log=lambda *_: None,
    )


def batches(rows: int, n: int = 2, seed: int = 3) -> list[dict]:
    """[micro_num, rows, 48] packs of two segments per row, ignored labels at the segment ends
    and a few more, three type ids."""
    rng = np.random.default_rng(seed)
    length = SEQ * MICRO_BSZ
    out = []
    for _ in range(n):
        shape = (MICRO_NUM, rows, length)
        ids = rng.integers(0, VOCAB, size=shape)
        cut = rng.integers(5, length - 5, size=shape[:2])[..., None]
        t = np.arange(length)
        labels = np.where((t == length - 1) | (t == cut - 1), -100, np.roll(ids, -1, axis=-1))
        labels = np.where(rng.random(shape) < 0.1, -100, labels)
        out.append(
            {
                "input_ids": ids.astype(np.int32),
                "labels": labels.astype(np.int32),
                "positions": np.where(t < cut, t, t - cut).astype(np.int32),
                "segment_ids": np.where(t < cut, 1, 2).astype(np.int32),
                "type_ids": rng.integers(0, NUM_TYPES, size=shape).astype(np.int32),
            }
        )
    return out


def train(cfg, devices, data, type_names=()):
    """Metrics of each step, the final and the initial params of make_train_step with cfg's
    ce_chunk_size."""
    sizes = parallel_sizes(cfg, len(devices))
    mesh = build_mesh(sizes, devices)
    rules = logical_axis_rules(cfg)
    model = build_model(cfg)
    tx, _, _ = build_optimizer(cfg)
    scaler = DynamicLossScaler.from_config(cfg)
    state, shardings = create_train_state(model, tx, scaler, mesh, rules, jax.random.key(3), cfg.data.seq_len)
    step = make_train_step(
        model,
        tx,
        scaler,
        mesh,
        rules,
        shardings,
        label_smoothing=cfg.loss.label_smoothing,
        matmul_precision=cfg.model.matmul_precision,
        type_names=type_names,
        ce_chunk_size=cfg.loss.ce_chunk_size,
    )
    init = jax.device_get(state.params)
    metrics = []
    for i, batch in enumerate(data):
        state, m = step(state, put_batch(batch, mesh, batch["input_ids"].shape[1]), i)
        metrics.append(jax.device_get(m))
    return metrics, jax.device_get(state.params), init


def test_fp32_train_step_equals_the_full_logits():
    """Two fp32 steps with label smoothing, per-type metrics, embed_grad_scale on the head: the
    same metrics and updated parameters with chunks of 20 (3 chunks per 48-token row) as with 0."""
    data = batches(rows=2)
    types = ("a", "b", "c")
    want, want_params, _ = train(tiny_config(0), jax.devices()[:1], data, types)
    got, got_params, init_params = train(tiny_config(20), jax.devices()[:1], data, types)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert "acc/b" in g and "loss/c" in g
        for key in w:
            np.testing.assert_allclose(g[key], w[key], rtol=1e-5, atol=1e-7, err_msg=key)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    head = got_params["head"]["kernel"]
    assert np.abs(head - init_params["head"]["kernel"]).max() > 1e-4  # trained through the fused loss


def test_bf16_trainer_step_equals_the_full_logits():
    """bf16 compute with the loss scaler, through the Trainer (it passes loss.ce_chunk_size): the
    loss and gradient norm of chunk 0 to bf16 accuracy."""
    data = batches(rows=1)

    def run(chunk):
        trainer = build_trainer(tiny_config(chunk, "torch.bfloat16"), devices=jax.devices()[:1])
        return [trainer.step(b) for b in data]

    want, got = run(0), run(20)
    for g, w in zip(got, want):
        assert g["loss_scale"] == w["loss_scale"] > 1  # the scaler is active for bf16
        assert not g["overflow"]
        for key in ("loss", "grad_norm", "perplexity", "loss/mock"):
            assert g[key] == pytest.approx(w[key], rel=2e-2), key
        assert g["tokens"] == w["tokens"]


def test_validation_stats_equal_the_full_logits():
    cfg = tiny_config(20)
    trainer = build_trainer(cfg, devices=jax.devices()[:1])
    batch = put_batch({k: v for k, v in batches(rows=1)[0].items() if k != "type_ids"}, trainer.mesh, 1)

    def stats(chunk):
        step = make_eval_step(
            trainer.model, trainer.mesh, trainer.rules, trainer.shardings.params, ce_chunk_size=chunk
        )
        return jax.device_get(step(trainer.state.params, batch))

    want, got = stats(0), stats(20)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)


def test_pipeline_step_equals_the_full_logits():
    """pipeline 2 x data 4 on the 8 fake CPU devices: the chunked loss on the last stage's hidden
    states gives the losses and parameters of the full logits."""
    data = batches(rows=4)

    def run(chunk):
        cfg = tiny_config(chunk, parallel=dict(zero1=1, pipeline=2), num_layers=4, scan_layers=True)
        return train(cfg, jax.devices(), data)

    (want, want_params, _), (got, got_params, _) = run(0), run(20)
    for g, w in zip(got, want):
        for key in ("loss", "grad_norm", "acc", "perplexity", "tokens"):
            np.testing.assert_allclose(g[key], w[key], rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tensor_parallel_step_equals_the_full_logits(mode="msp"):
    """data 4 x tensor 2 on the 8 fake CPU devices, msp: the vocabulary split over "tensor" and the
    hidden states split along the sequence before the loss gathers them (mtp splits only the
    vocabulary, a subset of this): the losses and parameters of the full logits."""
    data = batches(rows=4)

    def run(chunk):
        cfg = tiny_config(chunk, parallel=dict(zero1=1, tensor=dict(size=2, mode=mode)), vocab_size=98)
        return train(cfg, jax.devices(), data)

    (want, want_params, _), (got, got_params, _) = run(0), run(20)
    for g, w in zip(got, want):
        for key in ("loss", "grad_norm", "acc", "perplexity", "tokens"):
            np.testing.assert_allclose(g[key], w[key], rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_custom_loss_fn_gets_the_full_logits():
    """With a loss_fn of one's own the step forms the full logits, whatever ce_chunk_size says;
    its extras reach the metrics."""
    seen = []

    def loss_fn(logits, labels, batch):
        seen.append(logits.shape)
        return cross_entropy(logits, labels), {"extra": jnp.float32(2.0)}

    trainer = build_trainer(tiny_config(20), devices=jax.devices()[:1], loss_fn=loss_fn)
    metrics = trainer.step(batches(rows=1)[0])
    assert seen and seen[0][-1] == VOCAB
    assert metrics["extra"] == 2.0


# -- the knob --------------------------------------------------------------------------------------


def test_config_knob_default_and_errors():
    assert tiny_config(20).loss.ce_chunk_size == 20
    assert config_from_dict({}, log=lambda *_: None).loss.ce_chunk_size == 1024
    with pytest.raises(
        ConfigError, match=r"'loss.ce_chunk_size' must be a whole number of tokens, 0 or more, got -1"
    ):
        tiny_config(-1)
    with pytest.raises(ConfigError, match=r"loss.ce_chunk_size"):
        tiny_config(2.5)


# -- memory ----------------------------------------------------------------------------------------

GiB = 1024**3


def test_bench_1p5b_temporaries_drop_by_more_than_4_gib():
    """configs/bench_1p5b.py (vocab 103168, hidden 2048, 8 x 4096 tokens per micro-batch) compiled
    for one CPU stand-in by the dry run's `plan_memory`: the compiler's temporaries with the default
    chunk (1024) are at least 4 GiB below those of ce_chunk_size=0 (measured: 193.2 -> 171.5 GiB).

    All 22 layers, with one attention head: on the stand-ins XLA attention's scores (16 heads x 8
    windows x 4096^2 in fp32, 8 GiB a buffer) would otherwise be the step's peak and hide the loss
    (a fused attention kernel holds no such buffer; the heads do not change the logits). The plan compiles
    with fp32 compute on CPU (docs/parallel.md, "Memory plan"), so these are fp32 logits.
    """
    from internevo_jax.dry_run import plan_memory

    def temporaries(chunk):
        overrides = ["model.num_attention_heads=1", f"loss.ce_chunk_size={chunk}"]
        cfg = load_config("configs/bench_1p5b.py", overrides, log=lambda *_: None)
        assert (
            cfg.model.vocab_size,
            cfg.model.hidden_size,
            cfg.model.num_layers,
            cfg.data.packed_length,
        ) == (
            REAL_VOCAB,
            2048,
            22,
            8 * 4096,
        )
        return plan_memory(cfg, jax.devices()[:1]).compiled_temporaries

    full, chunked = temporaries(0), temporaries(1024)
    assert full - chunked >= 4 * GiB, (full / GiB, chunked / GiB)
