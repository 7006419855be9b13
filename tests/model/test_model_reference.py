"""The InternLM forward pass against an independent float64 NumPy implementation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg, packed_batch, randomize_params
from model_reference import ref_forward

from internevo_jax.model import InternLM, build_model

# ---------------------------------------------------------------- helpers


def init_random(model, ids, positions, segments, seed=0):
    # Only the tree's shapes are needed: every value is replaced by randomize_params.
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(seed), ids, positions, segments)
    return {"params": randomize_params(nn.meta.unbox(abstract["params"]), seed)}


def run(model, variables, ids, positions, segments):
    return np.asarray(jax.jit(model.apply)(variables, ids, positions, segments))


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa2", "mqa"])
def test_packed_forward_matches_float64_reference(kv_heads):
    cfg = make_cfg(num_kv_attention_heads=kv_heads)
    model = build_model(cfg)
    ids, positions, segments = packed_batch(np.random.default_rng(1))
    variables = init_random(model, ids, positions, segments)
    logits = run(model, variables, ids, positions, segments)
    expected = ref_forward(variables["params"], ids, positions, segments, model.args)
    assert logits.dtype == np.float32 and logits.shape == (2, 24, 128)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_unpacked_forward_defaults_positions_and_segments():
    model = build_model(make_cfg())
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 128, (2, 16)), jnp.int32)
    variables = init_random(model, ids, None, None)
    logits = run(model, variables, ids, None, None)
    positions = np.broadcast_to(np.arange(16), (2, 16))
    expected = ref_forward(variables["params"], ids, positions, None, model.args)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [dict(norm_type="layernorm"), dict(post_norm=True), dict(rope_base=1e6, qkv_bias=False, out_bias=False)],
    ids=["layernorm", "post_norm", "no_bias_rope1e6"],
)
def test_block_variants_match_reference(variant):
    import dataclasses

    args = dataclasses.replace(InternLM.from_config(make_cfg()).args, **variant)
    model = InternLM(args)
    ids, positions, segments = packed_batch(np.random.default_rng(3))
    variables = init_random(model, ids, positions, segments, seed=4)
    logits = run(model, variables, ids, positions, segments)
    expected = ref_forward(variables["params"], ids, positions, segments, args)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_segments_are_isolated():
    model = build_model(make_cfg(num_kv_attention_heads=2))
    ids, positions, segments = packed_batch(np.random.default_rng(5))
    variables = init_random(model, ids, positions, segments)
    base = run(model, variables, ids, positions, segments)
    # Row 0 holds segments [0:7], [7:16], [16:21] and padding [21:24]: rewrite the middle one.
    changed_ids = ids.at[0, 7:16].set((ids[0, 7:16] + 17) % 128)
    changed = run(model, variables, changed_ids, positions, segments)
    np.testing.assert_allclose(changed[0, :7], base[0, :7], rtol=0, atol=1e-6)
    np.testing.assert_allclose(changed[0, 16:21], base[0, 16:21], rtol=0, atol=1e-6)
    np.testing.assert_allclose(changed[1], base[1], rtol=0, atol=1e-6)
    assert np.abs(changed[0, 7:16] - base[0, 7:16]).max() > 1e-3
    assert np.isfinite(changed).all()


@pytest.mark.parametrize("residual_in_fp32", [False, True])
def test_bf16_compute_is_finite_and_close_to_fp32(residual_in_fp32):
    ids, positions, segments = packed_batch(np.random.default_rng(6))
    model32 = build_model(make_cfg())
    variables = init_random(model32, ids, positions, segments)
    model16 = build_model(
        make_cfg(compute_dtype=jnp.bfloat16, matmul_precision=None, residual_in_fp32=residual_in_fp32)
    )
    assert jnp.dtype(model16.args.residual_dtype) == (jnp.float32 if residual_in_fp32 else jnp.bfloat16)
    logits32 = run(model32, variables, ids, positions, segments)
    logits16 = jax.jit(model16.apply)(variables, ids, positions, segments)
    assert logits16.dtype == jnp.bfloat16
    logits16 = np.asarray(logits16, np.float32)
    assert np.isfinite(logits16).all()
    scale = np.abs(logits32).max()
    assert np.abs(logits16 - logits32).max() < 0.05 * scale
