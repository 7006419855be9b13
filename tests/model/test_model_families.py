"""The per-family options of the shared layers, each against a NumPy formula: the registry of the dense
families, (1 + w) RMSNorm, GeGLU, NormHead, interleaved RoPE, the q/k/v storage layouts, the per-layer
sliding window, and the refusals a wrong combination gets."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg

from internevo_jax.model import (
    MODEL_REGISTRY,
    Baichuan2,
    Gemma,
    InternLM2,
    InternLM3,
    Llama2,
    ModelArgs,
    Qwen2,
    Qwen3,
    build_model,
    model_family,
)
from internevo_jax.model.layers import FeedForward, RMSNorm, apply_rotary, rotary_tables
from internevo_jax.names import QKV_CONCAT, QKV_GROUPED, QKV_SEPARATE


def test_dense_families_are_registered():
    expected = {
        "QWEN2": Qwen2,
        "QWEN3": Qwen3,
        "GEMMA": Gemma,
        "BAICHUAN2": Baichuan2,
        "INTERNLM3": InternLM3,
        "LLAMA": Llama2,
        "INTERNLM2_PUBLIC": InternLM2,
    }
    for name, cls in expected.items():
        assert MODEL_REGISTRY[name] is cls
    assert model_family("LLAMA") == "LLAMA2" and model_family("INTERNLM3") == "INTERNLM3"


def family_args(model_type, **model):
    return build_model(make_cfg(model_type=model_type, **model)).args


def test_family_defaults_follow_internevo():
    qwen2 = family_args("QWEN2", no_bias=True)
    assert (qwen2.qkv_bias, qwen2.out_bias) == (True, False)  # Qwen2 ignores no_bias, as InternEvo's
    assert family_args("QWEN2", o_bias=True).out_bias
    gemma = family_args("GEMMA", head_dim=16, use_swiglu=False, add_unit_offset=True)
    assert gemma.tie_embeddings and gemma.embed_scale and gemma.mlp_activation == "gelu_tanh"
    assert gemma.head_dim == 16 and gemma.norm_unit_offset
    assert not family_args("GEMMA", tie_word_embeddings=False).tie_embeddings
    baichuan = family_args("BAICHUAN2", no_bias=True)
    assert baichuan.qkv_layout == QKV_CONCAT and baichuan.norm_head
    assert family_args("INTERNLM2").qkv_layout == QKV_GROUPED
    assert family_args("INTERNLM3", enable_qkv_fusion=False).qkv_layout == QKV_SEPARATE
    assert family_args("QWEN3").qk_norm and not family_args("QWEN3").qkv_bias
    # InternEvo's use_swiglu=False elsewhere is the exact-gelu GeGLU.
    assert family_args("INTERNLM", use_swiglu=False).mlp_activation == "gelu"


def plain(tree):
    """A params tree of numpy arrays (flax's partitioning boxes removed)."""
    return jax.tree.map(np.asarray, nn.meta.unbox(tree))


def tiny_args(**fields):
    base = dict(
        vocab_size=11,
        hidden_size=8,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        mlp_hidden_size=12,
    )
    return ModelArgs(**{**base, **fields})


def test_unit_offset_rmsnorm_scales_by_one_plus_w():
    args = tiny_args(norm_unit_offset=True, norm_eps=1e-6)
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
    norm = RMSNorm(args)
    params = plain(norm.init(jax.random.PRNGKey(0), x))
    assert np.all(params["params"]["scale"] == 0)  # starts as the identity scale
    w = np.linspace(-0.5, 0.5, 8).astype(np.float32)
    got = norm.apply({"params": {"scale": w}}, x)
    want = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * (1 + w)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_geglu_against_numpy(activation):
    args = tiny_args(mlp_activation=activation, scaled_init=False)
    x = np.random.default_rng(1).normal(size=(1, 3, 8)).astype(np.float32)
    ff = FeedForward(args)
    params = plain(ff.init(jax.random.PRNGKey(1), x, 0)["params"])
    p = jax.tree.map(lambda a: a.astype(np.float64), params)
    gate, up = x @ p["w1"]["kernel"], x @ p["w3"]["kernel"]
    if activation == "gelu":
        act = 0.5 * gate * (1 + np.vectorize(math.erf)(gate / np.sqrt(2)))
    else:
        act = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
    want = (act * up) @ p["w2"]["kernel"]
    np.testing.assert_allclose(ff.apply({"params": params}, x, 0), want, rtol=2e-5, atol=1e-6)


def test_norm_head_divides_each_vocab_column_by_its_norm():
    cfg = make_cfg(model_type="BAICHUAN2", num_layers=1)
    model = build_model(cfg)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = plain(model.init(jax.random.PRNGKey(2), ids)["params"])
    normed, kernel = model.apply(
        {"params": params}, jnp.ones((1, 4, cfg.model.hidden_size)), method="head_inputs"
    )
    raw = params["head"]["kernel"]
    np.testing.assert_allclose(kernel, raw / np.linalg.norm(raw, axis=0, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(kernel), axis=0), 1.0, rtol=1e-5)


def test_interleaved_rope_rotates_adjacent_lanes():
    x = np.random.default_rng(3).normal(size=(1, 5, 2, 8)).astype(np.float32)
    positions = jnp.arange(5)[None]
    cos, sin = rotary_tables(positions, 8, 10000.0)
    got = np.asarray(apply_rotary(jnp.asarray(x), cos, sin, interleaved=True))
    theta = np.arange(5)[:, None] * 10000.0 ** (-np.arange(0, 8, 2) / 8)
    c, s = np.cos(theta)[None, :, None], np.sin(theta)[None, :, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    np.testing.assert_allclose(got[..., 0::2], even * c - odd * s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[..., 1::2], odd * c + even * s, rtol=1e-5, atol=1e-6)
    # The same rotation as rotate-half on the lanes reordered evens-first.
    order = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])
    halves = np.asarray(apply_rotary(jnp.asarray(x[..., order]), cos, sin))
    np.testing.assert_allclose(got[..., order], halves, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("source", [QKV_SEPARATE, QKV_GROUPED, QKV_CONCAT])
@pytest.mark.parametrize("target", [QKV_SEPARATE, QKV_GROUPED, QKV_CONCAT])
def test_qkv_layouts_convert_without_changing_the_model(source, target):
    """Params converted between storage layouts (and lane orders) give the same logits."""
    from internevo_jax.hf.relayout import relayout
    from internevo_jax.hf.tensors import flatten, unflatten

    cfg = make_cfg(model_type="LLAMA2", num_kv_attention_heads=2, qk_interleaved=True)
    base = build_model(cfg)
    a = dataclasses.replace(base.args, qkv_layout=source)
    b = dataclasses.replace(base.args, qkv_layout=target, qk_interleaved=False)
    ids = jnp.asarray(np.random.default_rng(4).integers(0, cfg.model.vocab_size, (2, 9)), jnp.int32)
    model_a, model_b = base.clone(args=a), base.clone(args=b)
    params = plain(model_a.init(jax.random.PRNGKey(5), ids)["params"])
    moved = unflatten(
        relayout(flatten(params), a, source_layout=source, target_layout=target, lanes_to_halves=True)
    )
    np.testing.assert_allclose(
        model_a.apply({"params": params}, ids), model_b.apply({"params": moved}, ids), rtol=1e-5, atol=1e-6
    )


def test_per_layer_sliding_window_and_its_scan_refusal():
    args = family_args("QWEN2", num_layers=4, use_sliding_window=True, sliding_window=16, max_window_layers=2)
    assert [args.layer_window(i) for i in range(4)] == [None, None, 16, 16]
    # max_window_layers >= num_layers: no layer is windowed, as in Qwen2-7B's config (28 of 28).
    assert (
        family_args(
            "QWEN2", num_layers=4, use_sliding_window=True, sliding_window=16, max_window_layers=4
        ).sliding_window
        is None
    )
    with pytest.raises(ValueError, match="sliding window covers only layers 2 and up"):
        family_args(
            "QWEN2",
            num_layers=4,
            use_sliding_window=True,
            sliding_window=16,
            max_window_layers=2,
            scan_layers=True,
        )
    assert (
        family_args(
            "QWEN2", num_layers=4, use_sliding_window=True, sliding_window=16, scan_layers=True
        ).sliding_window
        == 16
    )


def test_sliding_window_needs_a_length():
    from internevo_jax.config import ConfigError, config_from_dict

    with pytest.raises(
        ConfigError, match="model.sliding_window.*use_sliding_window=True needs the window length"
    ):
        config_from_dict({"model_type": "QWEN2", "model": {"use_sliding_window": True}}, log=lambda *_: None)


def test_a_backend_without_windows_is_refused_by_name_and_skipped_by_auto(monkeypatch):
    """Every built-in backend runs windows; one that declares it cannot is refused when named and
    passed over by "auto" (never silently run without the window)."""
    from internevo_jax.model.attention import dispatch, xla
    from internevo_jax.model.attention.base import AttentionBackend

    def no_windows(query):
        if query.sliding_window is not None:
            return False, "this kernel has no sliding-window mask"
        return True, "plain causal"

    narrow = AttentionBackend("narrow", no_windows, xla.BACKEND.fn, "a kernel without windows")
    monkeypatch.setattr(dispatch, "BACKENDS", (narrow, xla.BACKEND))
    kw = dict(dtype=jnp.float32, head_dim=8, has_segments=True)
    with pytest.raises(ValueError, match="'narrow' cannot run here: this kernel has no sliding-window mask"):
        dispatch.select_attention_backend("narrow", "cpu", sliding_window=4, **kw)
    chosen = dispatch.select_attention_backend("auto", "cpu", sliding_window=4, **kw)
    assert chosen.name == "xla" and "narrow: this kernel has no sliding-window mask" in chosen.reason
    assert dispatch.select_attention_backend("auto", "cpu", **kw).name == "narrow"
