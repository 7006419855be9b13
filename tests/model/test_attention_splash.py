"""The Splash backend in Pallas interpret mode on CPU against the XLA reference: outputs and q/k/v
gradients for packed layouts, grouped kv heads, fp32 and bf16, sliding windows, a mesh."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg

from internevo_jax.model import build_model, select_attention_backend
from internevo_jax.model.attention import xla_attention
from internevo_jax.model.attention.splash import splash_attention
from internevo_jax.names import (
    ACT_BATCH,
    ACT_HEADS_DIM,
    ACT_KV_DIM,
    ACT_LENGTH,
    BATCH_AXES,
    MESH_AXES,
    TENSOR,
)

T, BLOCK = 256, 128  # two kernel blocks per row, so segments can straddle a block edge
HQ, HKV, D = 8, 2, 32
TOL = {jnp.float32: 2e-5, jnp.bfloat16: 2e-2}


def segments(*rows: list[int]) -> jnp.ndarray:
    """[len(rows), T] segment ids: each row's segments of the given lengths, then padding (0)."""
    out = np.zeros((len(rows), T), np.int32)
    for r, lengths in enumerate(rows):
        assert sum(lengths) <= T
        out[r, : sum(lengths)] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    return jnp.asarray(out)


def _short_segments(seed: int) -> list[int]:
    lengths = np.random.default_rng(seed).integers(1, 24, size=40)
    return list(lengths[np.cumsum(lengths) <= T])


LAYOUTS = {
    "one_segment": segments([T], [T]),
    "many_short": segments(_short_segments(0), _short_segments(1)),
    "across_block_edges": segments([100, 60, 96], [127, 2, 100]),  # row 1 ends in 27 padding tokens
    "length_one": segments([1, 126, 1, 1, 127], [128, 1, 60]),
}


def qkv(dtype, seed=0, b=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(keys[0], (b, T, HQ, D), jnp.float32).astype(dtype)
    k = jax.random.normal(keys[1], (b, T, HKV, D), jnp.float32).astype(dtype)
    v = jax.random.normal(keys[2], (b, T, HKV, D), jnp.float32).astype(dtype)
    cotangent = jax.random.normal(keys[3], (b, T, HQ, D), jnp.float32)
    return q, k, v, cotangent


def value_and_grads(fn, q, k, v, cotangent):
    """fn's output and the gradients of sum(output * cotangent) w.r.t. q, k, v, all as fp32."""

    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    grads, out = jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))(q, k, v)
    return [np.asarray(x, np.float32) for x in (out, *grads)]


def assert_matches_xla(seg, dtype, sliding_window=None):
    q, k, v, ct = qkv(dtype)
    kw = dict(scale=D**-0.5, sliding_window=sliding_window)
    ours = value_and_grads(
        lambda q, k, v: splash_attention(q, k, v, seg, interpret=True, block=BLOCK, **kw), q, k, v, ct
    )
    reference = value_and_grads(lambda q, k, v: xla_attention(q, k, v, seg, **kw), q, k, v, ct)
    tol = TOL[dtype]
    for name, a, b in zip(("output", "dq", "dk", "dv"), ours, reference):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)
    return q, k, v, reference[0]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_packed_layouts_match_xla(layout, dtype):
    seg = LAYOUTS[layout]
    q, k, v, out = assert_matches_xla(seg, dtype)
    unmasked = np.asarray(xla_attention(q, k, v, None, scale=D**-0.5), np.float32)
    if layout == "one_segment":
        np.testing.assert_allclose(out, unmasked, rtol=TOL[dtype], atol=TOL[dtype])
    else:  # attention leaking across segments would change the result
        assert np.abs(out - unmasked).max() > 0.1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
def test_causal_without_segments_matches_xla(dtype):
    assert_matches_xla(None, dtype)


@pytest.mark.parametrize("window", [50, 129])  # inside one block; reaching back over a block edge
def test_sliding_window_matches_xla(window):
    seg = segments([200, 56], [60, 190])  # segments longer than the window, across the block edge
    q, k, v, out = assert_matches_xla(seg, jnp.float32, sliding_window=window)
    full = np.asarray(xla_attention(q, k, v, seg, scale=D**-0.5), np.float32)
    assert np.abs(out - full).max() > 0.1  # the window cuts keys the full causal prefix sees


def test_mesh_splits_rows_and_heads_with_shard_map():
    # data 2 x tensor 2: rows over the data axes, q and kv heads over tensor, as the rules say.
    mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()[:4]).reshape(1, 2, 1, 1, 2),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * 5,
    )
    rules = ((ACT_BATCH, BATCH_AXES), (ACT_HEADS_DIM, TENSOR), (ACT_LENGTH, None), (ACT_KV_DIM, None))
    seg = LAYOUTS["across_block_edges"]
    q, k, v, ct = qkv(jnp.float32, seed=1)
    fn = functools.partial(splash_attention, scale=D**-0.5, interpret=True, block=BLOCK)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jaxpr = str(jax.make_jaxpr(lambda q, k, v: fn(q, k, v, seg))(q, k, v))
        ours = value_and_grads(lambda q, k, v: fn(q, k, v, seg), q, k, v, ct)
    assert "shard_map" in jaxpr and "'tensor'" in jaxpr
    reference = value_and_grads(lambda q, k, v: xla_attention(q, k, v, seg, scale=D**-0.5), q, k, v, ct)
    for name, a, b in zip(("output", "dq", "dk", "dv"), ours, reference):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=name)


def test_split_sequence_is_refused():
    mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()[:2]).reshape(1, 1, 1, 1, 2),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * 5,
    )
    rules = ((ACT_BATCH, BATCH_AXES), (ACT_LENGTH, TENSOR), (ACT_HEADS_DIM, None), (ACT_KV_DIM, None))
    q, k, v, _ = qkv(jnp.float32)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), pytest.raises(ValueError, match="whole sequences"):
        splash_attention(q, k, v, None, scale=1.0, interpret=True)


def test_lengths_the_kernel_cannot_take_are_refused():
    q = jnp.zeros((1, 200, 2, 16))
    with pytest.raises(ValueError, match=r"multiple of 128 \(got 200\)"):
        splash_attention(q, q, q, None, scale=1.0, interpret=True)
    with pytest.raises(ValueError, match="block 384 must be a multiple of 128 dividing T=256"):
        splash_attention(
            jnp.zeros((1, T, 2, 16)), *[jnp.zeros((1, T, 2, 16))] * 2, None, scale=1.0, block=384
        )


def _select(requested, platform, dtype=jnp.bfloat16, **kw):
    kw.setdefault("head_dim", 128)
    kw.setdefault("has_segments", True)
    kw.setdefault("seq_len", 4096)
    return select_attention_backend(requested, platform, dtype=dtype, **kw)


def test_dispatch():
    assert _select("auto", "tpu").name == "splash"
    assert _select("auto", "tpu", dtype=jnp.float32).name == "splash"
    assert _select("auto", "tpu", dtype=jnp.float16).name == "xla"
    assert _select("auto", "tpu", seq_len=4000).name == "xla"
    assert _select("auto", "tpu", use_flash_attn=False).name == "xla"
    assert _select("auto", "cpu").name == "xla"  # interpret mode is never the automatic choice
    on_cpu = _select("splash", "cpu")
    assert on_cpu.fn.keywords == {"interpret": True} and "interpret mode" in on_cpu.reason
    assert _select("splash", "tpu").fn.keywords == {"interpret": False}
    with pytest.raises(ValueError, match="splash attention is a TPU kernel"):
        _select("splash", "gpu")
    with pytest.raises(ValueError, match="multiple of 128 \\(got 4000\\); set data.seq_len"):
        _select("splash", "tpu", seq_len=4000)
    with pytest.raises(ValueError, match="bfloat16 or float32"):
        _select("splash", "tpu", dtype=jnp.float16)
    with pytest.raises(ValueError, match="head_dim a multiple of 8"):
        _select("splash", "tpu", head_dim=4)


def test_model_with_splash_matches_xla_model():
    ids = jax.random.randint(jax.random.PRNGKey(3), (1, 128), 0, 128)
    seg = jnp.asarray(np.repeat([1, 2, 3], [40, 70, 18])[None], jnp.int32)
    pos = jnp.asarray(np.concatenate([np.arange(40), np.arange(70), np.arange(18)])[None], jnp.int32)
    xla_model = build_model(make_cfg(attn_impl="xla"))
    params = xla_model.init(jax.random.PRNGKey(0), ids, pos, seg)
    ours = build_model(make_cfg(attn_impl="splash")).apply(params, ids, pos, seg)
    np.testing.assert_allclose(ours, xla_model.apply(params, ids, pos, seg), rtol=2e-5, atol=2e-5)
