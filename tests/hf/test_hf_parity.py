"""Logits parity with real implementations on CPU in fp32: transformers' LlamaForCausalLM (both
directions) and an independent PyTorch InternLM2 forward (both directions), plus InternLM2 seen
through its LLaMA equivalent (wqkv cut into q/k/v by kv group) in transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hf_helpers import (
    internlm2_reference_logits,
    llama_logits,
    load_state,
    logits_of,
    random_params,
    random_tokens,
    save_random_internlm2,
    save_random_llama,
    tiny_cfg,
)

from internevo_jax.hf import export_hf, import_hf, load_hf_params
from internevo_jax.hf.config_json import model_settings

TOL = 1e-4


def abstract_of(cfg):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from internevo_jax.model import build_model

    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return nn.meta.unbox(
        jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), ids, ids, ids)["params"]
    )


@pytest.mark.parametrize(
    "bias, kv_heads",
    [(True, 6), (True, 2), (False, 6), (False, 2)],
    ids=["bias-mha", "bias-gqa", "nobias-mha", "nobias-gqa"],
)
def test_import_transformers_llama_matches_its_logits(tmp_path, bias, kv_heads):
    save_random_llama(str(tmp_path), bias=bias, kv_heads=kv_heads, seed=kv_heads)
    tokens = random_tokens(seed=1)
    expected = llama_logits(str(tmp_path), tokens)
    params, cfg = import_hf(str(tmp_path), dtype="torch.float32")
    assert cfg.model_type == ("INTERNLM" if bias else "LLAMA2")
    assert cfg.model.num_kv_attention_heads == kv_heads and cfg.model.mlp_hidden_size == 80
    got = logits_of(cfg, params, tokens)
    assert np.abs(got - expected).max() < TOL
    # The trainer's hook reads the same folder into a config written by hand.
    hand = tiny_cfg("INTERNLM" if bias else "LLAMA2", kv_heads=kv_heads)
    loaded = load_hf_params(str(tmp_path), hand, abstract_of(hand))
    assert np.abs(logits_of(hand, loaded, tokens) - expected).max() < TOL


@pytest.mark.parametrize(
    "model_type, kv_heads", [("INTERNLM", 6), ("INTERNLM", 2), ("LLAMA2", 2), ("LLAMA2", 6)]
)
def test_export_to_transformers_llama_gives_the_same_logits(tmp_path, model_type, kv_heads):
    cfg = tiny_cfg(model_type, kv_heads=kv_heads)
    params = random_params(cfg, seed=kv_heads)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="50KB")
    tokens = random_tokens(seed=2)
    diff = np.abs(llama_logits(str(tmp_path / "hf"), tokens) - logits_of(cfg, params, tokens)).max()
    assert diff < TOL


def test_dynamic_ntk_rope_matches_transformers_past_max_positions(tmp_path):
    """InternEvo's dynamic NTK (factor 1) is HF's "dynamic" rope_scaling with factor 1."""
    cfg = tiny_cfg("INTERNLM", kv_heads=2, use_dynamic_ntk_rope=True, max_position_embeddings=8)
    params = random_params(cfg, seed=5)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["rope_scaling"]["type"] == "dynamic" and config["rope_scaling"]["factor"] == 1.0
    tokens = random_tokens(seed=3, batch=1, length=20)  # 20 > 8: the base grows
    ours = logits_of(cfg, params, tokens)
    assert np.abs(llama_logits(str(tmp_path / "hf"), tokens) - ours).max() < TOL
    plain = logits_of(tiny_cfg("INTERNLM", kv_heads=2), params, tokens)
    assert np.abs(plain - ours).max() > 1e-3  # the scaling did change the result


@pytest.mark.parametrize(
    "kv_heads, bias", [(2, False), (6, False), (1, True)], ids=["gqa", "mha", "mqa-bias"]
)
def test_internlm2_import_matches_the_pytorch_reference(tmp_path, kv_heads, bias):
    save_random_internlm2(str(tmp_path), kv_heads=kv_heads, bias=bias, seed=kv_heads)
    tokens = random_tokens(seed=4)
    params, cfg = import_hf(str(tmp_path), dtype="torch.float32")
    assert cfg.model_type == "INTERNLM2" and cfg.model.rope_base == 1e6 and cfg.model.no_bias is (not bias)
    got = logits_of(cfg, params, tokens)
    assert np.abs(got - internlm2_reference_logits(str(tmp_path), tokens)).max() < TOL


@pytest.mark.parametrize("kv_heads", [2, 6])
def test_internlm2_export_matches_the_pytorch_reference(tmp_path, kv_heads):
    cfg = tiny_cfg("INTERNLM2", kv_heads=kv_heads, rope_base=1e6)
    params = random_params(cfg, seed=10 + kv_heads)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="50KB")
    tokens = random_tokens(seed=5)
    expected = internlm2_reference_logits(str(tmp_path / "hf"), tokens)
    assert np.abs(logits_of(cfg, params, tokens) - expected).max() < TOL


def test_internlm2_export_through_its_llama_equivalent_in_transformers(tmp_path):
    """Cut the exported wqkv into q/k/v by kv group, save as LLaMA, run transformers: same logits."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = tiny_cfg("INTERNLM2", kv_heads=2, rope_base=1e6)
    params = random_params(cfg, seed=21)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    state = load_state(str(tmp_path / "hf"))
    heads, kv, d = 6, 2, 8
    groups = heads // kv
    llama = {
        "model.embed_tokens.weight": state["model.tok_embeddings.weight"],
        "model.norm.weight": state["model.norm.weight"],
        "lm_head.weight": state["output.weight"],
    }
    for i in range(2):
        p, q = f"model.layers.{i}.", f"model.layers.{i}."
        w = state[p + "attention.wqkv.weight"].view(kv, groups + 2, d, 48)
        llama[q + "self_attn.q_proj.weight"] = w[:, :groups].reshape(heads * d, 48)
        llama[q + "self_attn.k_proj.weight"] = w[:, groups].reshape(kv * d, 48)
        llama[q + "self_attn.v_proj.weight"] = w[:, groups + 1].reshape(kv * d, 48)
        llama[q + "self_attn.o_proj.weight"] = state[p + "attention.wo.weight"]
        llama[q + "mlp.gate_proj.weight"] = state[p + "feed_forward.w1.weight"]
        llama[q + "mlp.up_proj.weight"] = state[p + "feed_forward.w3.weight"]
        llama[q + "mlp.down_proj.weight"] = state[p + "feed_forward.w2.weight"]
        llama[q + "input_layernorm.weight"] = state[p + "attention_norm.weight"]
        llama[q + "post_attention_layernorm.weight"] = state[p + "ffn_norm.weight"]
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=101,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            rms_norm_eps=config["rms_norm_eps"],
            rope_theta=config["rope_theta"],
            tie_word_embeddings=False,
        )
    ).eval()
    model.load_state_dict(llama, strict=True)
    tokens = random_tokens(seed=6)
    with torch.no_grad():
        theirs = model(torch.tensor(tokens)).logits.numpy()
    assert np.abs(theirs - logits_of(cfg, params, tokens)).max() < TOL


def test_model_settings_from_released_internlm2_7b_config():
    """The sizes of the released InternLM2-7B config.json land on configs/7b_internlm2.py's values."""
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "bias": False,
        "vocab_size": 92544,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
    }
    model_type, model, warnings = model_settings(config, "internlm2-7b")
    assert model_type == "INTERNLM2"
    assert (model["mlp_ratio"], model["multiple_of"], model["num_kv_attention_heads"]) == (3.5, 256, 8)
    assert model["rope_base"] == 1e6 and model["no_bias"] and model["use_dynamic_ntk_rope"]
    assert len(warnings) == 1 and "factor 2.0" in warnings[0]
