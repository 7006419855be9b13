"""INTERNLM2 and LLAMA2: registry, parameter layout, init, forward vs the float64 reference,
the fused-wqkv grouping, dynamic NTK RoPE, post-norm, scan/remat/dtype options and the 7B configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg, packed_batch, randomize_params
from model_reference import ref_forward, ref_ntk_base, ref_rope

from internevo_jax.model import (
    InternLM,
    InternLM2,
    Llama2,
    build_model,
    model_family,
    model_notes,
    stack_layers,
)
from internevo_jax.model.block import split_grouped_qkv
from internevo_jax.model.layers import apply_rotary, rope_tables

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def cfg_for(model_type, **overrides):
    overrides.setdefault("no_bias", True)
    return make_cfg(model_type=model_type, **overrides)


def init_random(model, ids, positions, segments, seed=0):
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(seed), ids, positions, segments)
    return {"params": randomize_params(nn.meta.unbox(abstract["params"]), seed)}


def run(model, variables, ids, positions=None, segments=None):
    return np.asarray(jax.jit(model.apply)(variables, ids, positions, segments))


def test_registry_and_families():
    assert isinstance(build_model(cfg_for("INTERNLM2")), InternLM2)
    assert isinstance(build_model(cfg_for("INTERNLM2_PUBLIC")), InternLM2)  # InternEvo's name
    assert isinstance(build_model(cfg_for("LLAMA2")), Llama2)
    assert isinstance(build_model(make_cfg()), InternLM)
    assert [model_family(t) for t in ("INTERNLM", "INTERNLM2", "INTERNLM2_PUBLIC", "LLAMA2")] == [
        "INTERNLM",
        "INTERNLM2",
        "INTERNLM2",
        "LLAMA2",
    ]


def test_internlm2_param_tree_has_fused_wqkv():
    cfg = cfg_for("INTERNLM2", num_attention_heads=4, num_kv_attention_heads=2)
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = nn.meta.unbox(jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), ids)["params"])
    attn = shapes["layers_0"]["attention"]
    assert set(attn) == {"wqkv", "wo"}
    # hidden 64, 4 heads of 16, 2 kv heads: 2 groups x (2 q + k + v) x 16 = 128 columns, no bias.
    assert attn["wqkv"] == {"kernel": jax.ShapeDtypeStruct((64, 128), jnp.float32)}
    assert attn["wo"]["kernel"].shape == (64, 64) and "bias" not in attn["wo"]
    specs = nn.get_partition_spec(jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), ids))
    assert tuple(specs["params"]["layers_0"]["attention"]["wqkv"]["kernel"]) == ("embed", "heads")


def test_llama2_param_tree_matches_internevo_names():
    shapes = nn.meta.unbox(
        jax.eval_shape(
            build_model(cfg_for("LLAMA2", num_kv_attention_heads=2)).init,
            jax.random.PRNGKey(0),
            jnp.zeros((1, 8), jnp.int32),
        )["params"]
    )
    layer = shapes["layers_1"]
    assert set(layer) == {"attention", "attention_norm", "feed_forward", "ffn_norm"}
    assert set(layer["attention"]) == {"wq", "wk", "wv", "wo"}
    assert set(layer["feed_forward"]) == {"w1", "w2", "w3"}
    assert "bias" not in layer["attention"]["wq"]
    assert layer["attention"]["wk"]["kernel"].shape == (64, 32)


def test_bias_follows_no_bias_as_in_internevo():
    shapes = nn.meta.unbox(
        jax.eval_shape(
            build_model(cfg_for("INTERNLM2", no_bias=False)).init,
            jax.random.PRNGKey(0),
            jnp.zeros((1, 8), jnp.int32),
        )["params"]
    )
    assert shapes["layers_0"]["attention"]["wqkv"]["bias"].shape == (64 * 3,)
    assert shapes["layers_0"]["attention"]["wo"]["bias"].shape == (64,)


@pytest.mark.parametrize("model_type", ["INTERNLM2", "LLAMA2"])
def test_init_stds_are_internevo_defaults(model_type):
    cfg = cfg_for(
        model_type, hidden_size=256, num_attention_heads=4, num_kv_attention_heads=2, vocab_size=512
    )
    ids = jnp.zeros((1, 8), jnp.int32)
    params = nn.meta.unbox(jax.jit(build_model(cfg).init)(jax.random.PRNGKey(0), ids)["params"])

    def std(x):
        return float(np.asarray(x, np.float64).std())

    assert std(params["embedding"]["embedding"]) == pytest.approx(0.02, rel=0.03)
    assert std(params["head"]["kernel"]) == pytest.approx(0.02, rel=0.03)
    attn = params["layers_1"]["attention"]
    qkv = attn["wqkv"]["kernel"] if "wqkv" in attn else attn["wq"]["kernel"]
    assert std(qkv) == pytest.approx(0.02, rel=0.03)
    assert std(attn["wo"]["kernel"]) == pytest.approx(0.02 / np.sqrt(4), rel=0.03)
    assert std(params["layers_1"]["feed_forward"]["w2"]["kernel"]) == pytest.approx(
        0.02 / np.sqrt(4), rel=0.03
    )


def test_grouped_wqkv_split_against_index_arithmetic():
    """Numbers, not shapes: every column of the fused output lands in the head InternEvo puts it."""
    heads, kv_heads, d = 6, 2, 4
    groups = heads // kv_heads
    width = kv_heads * (groups + 2) * d
    y = jnp.arange(width, dtype=jnp.float32).reshape(1, 1, width)  # value = column index
    q, k, v = (np.asarray(t)[0, 0] for t in split_grouped_qkv(y, heads, kv_heads, d))
    for g in range(kv_heads):
        base = g * (groups + 2) * d
        for j in range(groups):
            np.testing.assert_array_equal(q[g * groups + j], base + j * d + np.arange(d))
        np.testing.assert_array_equal(k[g], base + groups * d + np.arange(d))
        np.testing.assert_array_equal(v[g], base + (groups + 1) * d + np.arange(d))


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa2", "mqa"])
@pytest.mark.parametrize("model_type", ["INTERNLM2", "LLAMA2"])
def test_forward_matches_float64_reference(model_type, kv_heads):
    model = build_model(cfg_for(model_type, num_kv_attention_heads=kv_heads, rope_base=1e6))
    ids, positions, segments = packed_batch(np.random.default_rng(11))
    variables = init_random(model, ids, positions, segments, seed=kv_heads)
    logits = run(model, variables, ids, positions, segments)
    expected = ref_forward(variables["params"], ids, positions, segments, model.args)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_internlm2_equals_llama2_with_split_weights():
    """The fused grouped wqkv is the LLaMA2 model with wq/wk/wv cut out of it by kv group."""
    heads, kv_heads = 4, 2
    cfg2 = cfg_for("INTERNLM2", num_kv_attention_heads=kv_heads)
    m2, ml = build_model(cfg2), build_model(cfg_for("LLAMA2", num_kv_attention_heads=kv_heads))
    ids, positions, segments = packed_batch(np.random.default_rng(12))
    variables = init_random(m2, ids, positions, segments, seed=3)
    d, groups = m2.args.head_dim, heads // kv_heads
    llama = jax.tree.map(lambda x: x, variables["params"])
    for i in range(m2.args.num_layers):
        attn = dict(llama[f"layers_{i}"]["attention"])
        w = np.asarray(attn.pop("wqkv")["kernel"]).reshape(64, kv_heads, groups + 2, d)
        attn["wq"] = {"kernel": jnp.asarray(w[:, :, :groups].reshape(64, heads * d))}
        attn["wk"] = {"kernel": jnp.asarray(w[:, :, groups].reshape(64, kv_heads * d))}
        attn["wv"] = {"kernel": jnp.asarray(w[:, :, groups + 1].reshape(64, kv_heads * d))}
        llama[f"layers_{i}"] = {**llama[f"layers_{i}"], "attention": attn}
    np.testing.assert_allclose(
        run(m2, variables, ids, positions, segments),
        run(ml, {"params": llama}, ids, positions, segments),
        rtol=1e-5,
        atol=1e-5,
    )


def test_dynamic_ntk_rope_tables_match_internevo_formula():
    cfg = cfg_for("INTERNLM2", use_dynamic_ntk_rope=True, max_position_embeddings=16, rope_base=1e4)
    args = build_model(cfg).args
    assert args.dynamic_ntk and args.max_position_embeddings == 16
    positions = jnp.asarray(np.stack([np.arange(24), np.r_[np.arange(12), np.arange(12)]]), jnp.int32)
    x = np.random.default_rng(0).normal(size=(2, 24, 3, args.head_dim))
    cos, sin = rope_tables(args, positions)
    got = np.asarray(apply_rotary(jnp.asarray(x, jnp.float32), cos, sin))
    bases = ref_ntk_base(positions, args.head_dim, 1e4, 16)
    assert bases[0] == pytest.approx(1e4 * (24 / 16) ** (16 / 14)) and bases[1] == 1e4  # row 1 stays <= 16
    np.testing.assert_allclose(got, ref_rope(x, np.asarray(positions), bases), rtol=1e-4, atol=1e-4)


def test_dynamic_ntk_forward_matches_reference_and_is_plain_rope_below_max():
    ids, positions, segments = packed_batch(np.random.default_rng(13))  # max position 20
    long_cfg = cfg_for(
        "INTERNLM2", num_kv_attention_heads=2, use_dynamic_ntk_rope=True, max_position_embeddings=8
    )
    model = build_model(long_cfg)
    variables = init_random(model, ids, positions, segments, seed=5)
    logits = run(model, variables, ids, positions, segments)
    np.testing.assert_allclose(
        logits, ref_forward(variables["params"], ids, positions, segments, model.args), rtol=1e-5, atol=1e-5
    )
    plain = build_model(cfg_for("INTERNLM2", num_kv_attention_heads=2))
    assert np.abs(logits - run(plain, variables, ids, positions, segments)).max() > 1e-3
    roomy = InternLM2(dataclasses.replace(model.args, max_position_embeddings=64))
    np.testing.assert_allclose(
        run(roomy, variables, ids, positions, segments),
        run(plain, variables, ids, positions, segments),
        atol=1e-6,
    )


def test_llama2_ignores_dynamic_ntk_with_a_note():
    cfg = cfg_for("LLAMA2", use_dynamic_ntk_rope=True)
    assert not build_model(cfg).args.dynamic_ntk
    assert any("use_dynamic_ntk_rope" in n for n in model_notes(cfg))
    # qk_interleaved is a real setting now (interleaved RoPE), not a note.
    assert build_model(cfg_for("INTERNLM2", qk_interleaved=True)).args.qk_interleaved
    assert model_notes(cfg_for("INTERNLM2", qk_interleaved=True)) == []


@pytest.mark.parametrize("model_type", ["INTERNLM2", "LLAMA2"])
def test_post_norm_has_no_final_norm_and_matches_reference(model_type):
    model = build_model(cfg_for(model_type, apply_post_layer_norm=True, num_kv_attention_heads=2))
    assert model.args.post_norm and not model.args.final_norm
    ids, positions, segments = packed_batch(np.random.default_rng(14))
    variables = init_random(model, ids, positions, segments, seed=6)
    assert "norm" not in variables["params"]
    np.testing.assert_allclose(
        run(model, variables, ids, positions, segments),
        ref_forward(variables["params"], ids, positions, segments, model.args),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        dict(norm_type="layernorm", layer_norm_epsilon=1e-6),
        dict(checkpoint=True, checkpoint_layers=2),
        dict(checkpoint=0.5, checkpoint_layers=1, remat_policy="save_matmuls"),
    ],
    ids=["layernorm", "remat_all", "remat_half"],
)
def test_options_keep_the_reference_forward(overrides):
    model = build_model(cfg_for("INTERNLM2", num_kv_attention_heads=2, **overrides))
    ids, positions, segments = packed_batch(np.random.default_rng(15))
    variables = init_random(model, ids, positions, segments, seed=7)
    np.testing.assert_allclose(
        run(model, variables, ids, positions, segments),
        ref_forward(variables["params"], ids, positions, segments, model.args),
        rtol=1e-5,
        atol=1e-5,
    )


def test_scan_matches_unrolled_for_internlm2():
    unrolled = build_model(cfg_for("INTERNLM2", num_kv_attention_heads=2))
    scanned = build_model(cfg_for("INTERNLM2", num_kv_attention_heads=2, scan_layers=True))
    ids, positions, segments = packed_batch(np.random.default_rng(16))
    variables = init_random(unrolled, ids, positions, segments, seed=8)
    np.testing.assert_allclose(
        run(scanned, stack_layers(variables), ids, positions, segments),
        run(unrolled, variables, ids, positions, segments),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bf16_compute_and_embed_grad_scale():
    ids, positions, segments = packed_batch(np.random.default_rng(17))
    m32 = build_model(cfg_for("INTERNLM2", num_kv_attention_heads=2))
    variables = init_random(m32, ids, positions, segments, seed=9)
    m16 = build_model(
        cfg_for("INTERNLM2", num_kv_attention_heads=2, compute_dtype=jnp.bfloat16, matmul_precision=None)
    )
    l32 = run(m32, variables, ids, positions, segments)
    l16 = jax.jit(m16.apply)(variables, ids, positions, segments)
    assert l16.dtype == jnp.bfloat16
    assert np.abs(np.asarray(l16, np.float32) - l32).max() < 0.05 * np.abs(l32).max()

    scaled = build_model(cfg_for("INTERNLM2", num_kv_attention_heads=2, embed_grad_scale=0.1))

    def grads(model):
        loss = lambda p: model.apply({"params": p}, ids, positions, segments).sum()
        return jax.grad(loss)(variables["params"])

    g1, g2 = grads(m32), grads(scaled)
    np.testing.assert_allclose(g2["embedding"]["embedding"], 0.1 * g1["embedding"]["embedding"], rtol=1e-4)
    np.testing.assert_allclose(
        g2["layers_0"]["attention"]["wqkv"]["kernel"],
        g1["layers_0"]["attention"]["wqkv"]["kernel"],
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "name, cls, kv_heads, rope_base, vocab",
    [("7b_internlm2.py", InternLM2, 8, 1e6, 92544), ("7b_llama2.py", Llama2, 8, 1e4, 32000)],
)
def test_7b_configs_load_and_build(name, cls, kv_heads, rope_base, vocab):
    from internevo_jax.config import load_config

    cfg = load_config(str(CONFIGS / name), overrides=["model.num_layers=2"], log=lambda *a: None)
    model = build_model(cfg)
    assert isinstance(model, cls)
    a = model.args
    assert (a.hidden_size, a.num_heads, a.num_kv_heads, a.head_dim) == (4096, 32, kv_heads, 128)
    assert (a.vocab_size, a.mlp_hidden_size, a.rope_base) == (vocab, 14336, rope_base)
    assert not a.qkv_bias and not a.out_bias and jnp.dtype(a.dtype) == jnp.bfloat16
    ids = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, ids, ids)["params"])
    attn = params["layers_0"]["attention"]
    if cls is InternLM2:
        assert attn["wqkv"]["kernel"].shape == (4096, (32 + 2 * 8) * 128)
    else:
        assert attn["wk"]["kernel"].shape == (4096, 8 * 128)
