"""The InternLM forward pass against an independent float64 NumPy implementation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg, packed_batch, randomize_params

from internevo_jax.model import InternLM, ModelArgs, build_model

# ---------------------------------------------------------------- float64 reference


def ref_rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def ref_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def ref_rope(x, positions, base):
    """HF Llama formulation: x * cos + rotate_half(x) * sin, with cos/sin repeated over halves."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    freqs = positions[..., None].astype(np.float64) * inv_freq  # [B, T, D/2]
    emb = np.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, D]
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * np.cos(emb) + rotated * np.sin(emb)


def ref_attention(q, k, v, segments):
    """Loop over batch and heads; kv head for query head h is h // (Hq // Hkv)."""
    b, t, hq, d = q.shape
    groups = hq // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for h in range(hq):
            kv = h // groups
            scores = q[bi, :, h] @ k[bi, :, kv].T / np.sqrt(d)
            for i in range(t):
                for j in range(t):
                    visible = j <= i and (segments is None or segments[bi, i] == segments[bi, j])
                    if not visible:
                        scores[i, j] = -np.inf
            scores = scores - scores.max(-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(-1, keepdims=True)
            out[bi, :, h] = p @ v[bi, :, kv]
    return out


def ref_forward(params, ids, positions, segments, args: ModelArgs):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

    def norm(x, n):
        if args.norm_type == "rmsnorm":
            return ref_rmsnorm(x, n["scale"], args.norm_eps)
        return ref_layernorm(x, n["scale"], n["bias"], args.norm_eps)

    def linear(x, layer):
        y = x @ layer["kernel"]
        return y + layer["bias"] if "bias" in layer else y

    def attention(x, a):
        bsz, t, _ = x.shape
        q = linear(x, a["wq"]).reshape(bsz, t, args.num_heads, args.head_dim)
        k = linear(x, a["wk"]).reshape(bsz, t, args.num_kv_heads, args.head_dim)
        v = linear(x, a["wv"]).reshape(bsz, t, args.num_kv_heads, args.head_dim)
        q, k = ref_rope(q, positions, args.rope_base), ref_rope(k, positions, args.rope_base)
        o = ref_attention(q, k, v, segments).reshape(bsz, t, -1)
        return linear(o, a["wo"])

    def mlp(x, f):
        gate = x @ f["w1"]["kernel"]
        silu = gate / (1.0 + np.exp(-gate))
        return (silu * (x @ f["w3"]["kernel"])) @ f["w2"]["kernel"]

    x = p["embedding"]["embedding"][np.asarray(ids)]
    positions, segments = np.asarray(positions), None if segments is None else np.asarray(segments)
    for i in range(args.num_layers):
        lp = p[f"layers_{i}"]
        if args.post_norm:
            h = norm(x + attention(x, lp["attention"]), lp["attention_norm"])
            x = norm(h + mlp(h, lp["feed_forward"]), lp["ffn_norm"])
        else:
            h = x + attention(norm(x, lp["attention_norm"]), lp["attention"])
            x = h + mlp(norm(h, lp["ffn_norm"]), lp["feed_forward"])
    x = norm(x, p["norm"])
    return x @ p["head"]["kernel"]


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
