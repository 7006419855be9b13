"""Attention backends: the dispatcher's choices and the dense-mask paths' numerics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg, packed_batch

from internevo_jax.model import attention_backend_name, build_model, select_attention_backend
from internevo_jax.model.attention import backend_names, dpa_attention, xla_attention


def _select(requested, platform, dtype=jnp.bfloat16, **kw):
    kw.setdefault("head_dim", 128)
    kw.setdefault("has_segments", True)
    return select_attention_backend(requested, platform, dtype=dtype, **kw).name


def test_order_and_names():
    assert backend_names() == ["cudnn", "pallas_gpu", "splash", "xla"]  # xla last: it always works


def test_auto_on_cpu_is_xla():
    assert _select("auto", "cpu") == "xla"
    assert attention_backend_name(make_cfg(), "cpu") == "xla"


def test_explicit_cudnn_on_cpu_raises_with_reason():
    with pytest.raises(ValueError, match="'cudnn' cannot run here: cuDNN attention needs an NVIDIA GPU"):
        _select("cudnn", "cpu")
    with pytest.raises(ValueError, match="NVIDIA GPU"):
        attention_backend_name(make_cfg(attn_impl="cudnn", compute_dtype=jnp.bfloat16), "cpu")


def test_gpu_choices():
    assert _select("auto", "gpu") == "cudnn"
    assert _select("auto", "gpu", has_segments=False) == "cudnn"
    assert _select("auto", "gpu", dtype=jnp.float32) == "xla"  # cuDNN flash attention is bf16/fp16 only
    assert _select("auto", "gpu", head_dim=160) == "xla"
    assert _select("auto", "gpu", use_flash_attn=False) == "xla"
    assert _select("auto", "rocm") == "xla"
    assert _select("cudnn", "gpu", use_flash_attn=False) == "cudnn"  # an explicit name wins
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        _select("cudnn", "gpu", dtype=jnp.float32)
    with pytest.raises(ValueError, match="even sequence length"):
        _select("cudnn", "gpu", seq_len=4095)


def test_unknown_backend_names_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'cudnn'"):
        _select("cuddn", "gpu")


def test_model_with_unsupported_explicit_backend_fails_at_trace():
    model = build_model(make_cfg(attn_impl="cudnn"))
    ids = jnp.zeros((1, 8), jnp.int32)
    with pytest.raises(ValueError, match="cannot run here"):
        model.init(jax.random.PRNGKey(0), ids)


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("packed", [True, False])
def test_dot_product_attention_path_matches_xla_backend(kv_heads, packed):
    # The cuDNN backend's mask/layout handling, run through jax's XLA implementation on CPU.
    rng = np.random.default_rng(0)
    _, _, segments = packed_batch(rng)
    segments = segments if packed else None
    b, t, hq, d = 2, 24, 4, 16
    q = jnp.asarray(rng.normal(size=(b, t, hq, d)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, t, kv_heads, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, t, kv_heads, d)), jnp.float32)
    ours = xla_attention(q, k, v, segments, scale=d**-0.5)
    theirs = dpa_attention(q, k, v, segments, scale=d**-0.5, implementation="xla")
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)


def test_padding_rows_stay_finite():
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(1, 6, 2, 8)) * 50, jnp.bfloat16)
    segments = jnp.asarray([[1, 1, 2, 0, 0, 0]], jnp.int32)
    out = xla_attention(q, q, q, segments, scale=8**-0.5)
    assert np.isfinite(np.asarray(out, np.float32)).all()


def test_memory_plan_platform_recomputes_the_chosen_backend():
    from internevo_jax.model.attention.dispatch import MEMORY_PLAN_PLATFORM

    plan = select_attention_backend(
        "auto", MEMORY_PLAN_PLATFORM, dtype=jnp.float32, head_dim=8, has_segments=True
    )
    assert plan.name == "xla" and plan.fn is not xla_attention  # checked as on CPU, scores recomputed
    with pytest.raises(ValueError, match="'cudnn' cannot run here: cuDNN attention needs an NVIDIA GPU"):
        _select("cudnn", MEMORY_PLAN_PLATFORM)
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (1, 8, 2, 8)) for i in range(3))
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]])

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v, seg, scale=0.3) ** 2)

    np.testing.assert_allclose(plan.fn(q, k, v, seg, scale=0.3), xla_attention(q, k, v, seg, scale=0.3))
    for a, b in zip(
        jax.grad(loss(plan.fn), (0, 1, 2))(q, k, v), jax.grad(loss(xla_attention), (0, 1, 2))(q, k, v)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert "remat" in str(jax.make_jaxpr(jax.grad(loss(plan.fn)))(q, k, v))  # recomputed in the backward


def test_pipeline_chunks_keep_packed_rows_off_cudnn():
    """jax's batching rule for the cuDNN call cannot take packed rows, and pipeline stages run
    under vmap: the chunk a pipeline runs says so, and its packed rows go to pallas_gpu."""
    with pytest.raises(ValueError, match="'cudnn' cannot run here: packed rows inside pipeline stages"):
        _select("cudnn", "gpu", vmapped=True)
    assert _select("auto", "gpu", vmapped=True) == "pallas_gpu"
    assert _select("cudnn", "gpu", vmapped=True, has_segments=False) == "cudnn"
    model = build_model(make_cfg(scan_layers=True, num_layers=4))
    assert not model.args.pipeline_chunk and model.chunk(2).args.pipeline_chunk
