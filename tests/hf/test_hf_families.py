"""The dense families against transformers' own classes in fp32 (random weights, packed rows), both
directions: Qwen2 (with and without a sliding window), Qwen3 (q/k norm, head_dim), Gemma, LLaMA
(model_type LLAMA) and InternLM3's layout (LlamaForCausalLM's maths); Baichuan2 against a float64
forward written from its published architecture; bit-identical round trips of every family and
layout; and the errors a wrong folder or setting gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_helpers import (
    HEAD_DIM,
    baichuan2_reference_logits,
    packed_diff,
    packed_logits,
    packed_row,
    patch_config,
    save_random_baichuan2,
    save_random_hf,
)
from hf_helpers import random_params, tiny_cfg

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf import export_hf, import_hf, load_hf_params
from internevo_jax.hf.tensors import unrolled_leaves
from internevo_jax.model import abstract_params, build_model

TOL = 1e-4

# (model_type of the import, transformers kind, its config fields, our model keys for a hand config)
FAMILIES = {
    "qwen2": ("QWEN2", "qwen2", {}, {}),
    "qwen2-window": (
        "QWEN2",
        "qwen2",
        dict(use_sliding_window=True, sliding_window=3, max_window_layers=1, num_layers=3),
        dict(use_sliding_window=True, sliding_window=3, max_window_layers=1, num_layers=3),
    ),
    "qwen2-tied": ("QWEN2", "qwen2", dict(tie_word_embeddings=True), dict(tie_word_embeddings=True)),
    "qwen3": ("QWEN3", "qwen3", dict(head_dim=HEAD_DIM), dict(head_dim=HEAD_DIM)),
    "gemma": (
        "GEMMA",
        "gemma",
        dict(head_dim=HEAD_DIM),
        dict(head_dim=HEAD_DIM, use_swiglu=False, add_unit_offset=True),
    ),
    "gemma-mha-bias": (
        "GEMMA",
        "gemma",
        dict(head_dim=HEAD_DIM, num_key_value_heads=6, attention_bias=True),
        dict(head_dim=HEAD_DIM, use_swiglu=False, add_unit_offset=True, no_bias=False, kv_heads=6),
    ),
}


def save_family(folder, name, seed=0):
    _, kind, fields, _ = FAMILIES[name]
    fields = dict(fields)
    layers = fields.pop("num_layers", 2)
    save_random_hf(str(folder), kind, seed=seed, num_layers=layers, **fields)


def hand_cfg(name, **extra):
    model_type, _, _, ours = FAMILIES[name]
    ours = dict(ours, **extra)
    kv = ours.pop("kv_heads", 2)
    ours.setdefault("no_bias", True)
    return tiny_cfg(model_type, kv_heads=kv, layer_norm_epsilon=1e-5, **ours)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_import_matches_transformers(tmp_path, name):
    save_family(tmp_path, name, seed=len(name))
    params, cfg = import_hf(str(tmp_path), dtype="torch.float32")
    assert cfg.model_type == FAMILIES[name][0]
    assert packed_diff(cfg, params, str(tmp_path)) < TOL
    # ckpt_type="hf": the same folder into a config written by hand.
    hand = hand_cfg(name)
    loaded = load_hf_params(str(tmp_path), hand, abstract_params(build_model(hand)))
    assert packed_diff(hand, loaded, str(tmp_path)) < TOL


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, name):
    cfg = hand_cfg(name)
    params = random_params(cfg, seed=3)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="50KB")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"][0].lower().startswith(FAMILIES[name][1])
    assert packed_diff(cfg, params, str(tmp_path / "hf")) < TOL


def test_sliding_window_changes_the_windowed_layers_only(tmp_path):
    """The window is live in the test above: without it the same weights give other logits."""
    cfg = hand_cfg("qwen2-window")
    params = random_params(cfg, seed=4)
    plain = hand_cfg("qwen2-window", use_sliding_window=False)
    tokens, positions, segments = packed_row()
    windowed = packed_logits(cfg, params, tokens, positions, segments)
    assert np.abs(windowed - packed_logits(plain, params, tokens, positions, segments)).max() > 1e-3
    # Every layer at or past max_window_layers windowed == InternEvo's per-layer rule.
    model = build_model(cfg)
    assert [model.args.layer_window(i) for i in range(3)] == [None, 3, 3]


def test_llama_alias_reads_and_writes_llama_folders(tmp_path):
    save_random_hf(str(tmp_path / "in"), "llama", seed=2)
    params, _ = import_hf(str(tmp_path / "in"), model_type="LLAMA", dtype="torch.float32")
    cfg = tiny_cfg("LLAMA", kv_heads=2)
    assert packed_diff(cfg, params, str(tmp_path / "in")) < TOL
    export_hf(params, cfg, str(tmp_path / "out"), dtype="fp32")
    assert packed_diff(cfg, params, str(tmp_path / "out")) < TOL


@pytest.mark.parametrize("fusion", [False, True], ids=["separate", "fused"])
def test_internlm3_layout_is_llamas(tmp_path, fusion):
    """INTERNLM3 folders (InternLM3ForCausalLM, remote code) hold LlamaForCausalLM's tensors and
    maths: a LLaMA folder relabelled InternLM3 imports with LLaMA's logits, and an INTERNLM3 export
    relabelled LLaMA loads in transformers with ours, whether our wqkv is fused or not."""
    save_random_hf(str(tmp_path / "in"), "llama", seed=5)
    patch_config(
        str(tmp_path / "in"),
        architectures=["InternLM3ForCausalLM"],
        model_type="internlm3",
        qkv_bias=False,
        bias=False,
        attention_bias=None,
    )
    cfg = tiny_cfg("INTERNLM3", kv_heads=2, enable_qkv_fusion=fusion)
    params = load_hf_params(str(tmp_path / "in"), cfg, abstract_params(build_model(cfg)))
    relabel_llama = dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False)

    def llama_logits(folder, tokens):
        from family_helpers import hf_logits

        patch_config(folder, **relabel_llama)
        return hf_logits(folder, tokens)

    assert packed_diff(cfg, params, str(tmp_path / "in"), reference=llama_logits) < TOL
    export_hf(params, cfg, str(tmp_path / "out"), dtype="fp32")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["InternLM3ForCausalLM"] and config["qkv_bias"] is False
    assert "auto_map" in config
    assert packed_diff(cfg, params, str(tmp_path / "out"), reference=llama_logits) < TOL


def test_baichuan2_against_a_float64_reference(tmp_path):
    save_random_baichuan2(str(tmp_path / "in"))
    params, cfg = import_hf(str(tmp_path / "in"), dtype="torch.float32")
    assert cfg.model_type == "BAICHUAN2" and cfg.model.norm_head
    assert packed_diff(cfg, params, str(tmp_path / "in"), reference=baichuan2_reference_logits) < TOL
    hand = tiny_cfg("BAICHUAN2", kv_heads=6, layer_norm_epsilon=1e-6)
    ours = random_params(hand, seed=6)
    export_hf(ours, hand, str(tmp_path / "out"), dtype="fp32")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BaichuanForCausalLM"]
    assert packed_diff(hand, ours, str(tmp_path / "out"), reference=baichuan2_reference_logits) < TOL


ROUND_TRIPS = {
    "QWEN2": {},
    "QWEN2-window-interleaved": dict(use_sliding_window=True, sliding_window=4, qk_interleaved=True),
    "QWEN3": dict(head_dim=HEAD_DIM),
    "QWEN3-interleaved": dict(head_dim=HEAD_DIM, qk_interleaved=True),
    "GEMMA": dict(head_dim=HEAD_DIM, use_swiglu=False, add_unit_offset=True),
    "GEMMA-untied": dict(
        head_dim=HEAD_DIM, use_swiglu=False, add_unit_offset=True, tie_word_embeddings=False
    ),
    "BAICHUAN2": {},
    "INTERNLM3": dict(enable_qkv_fusion=False),
    "INTERNLM3-fused": {},
    "INTERNLM2-separate": dict(enable_qkv_fusion=False),
    "LLAMA": {},
    "INTERNLM": dict(no_bias=False, qk_interleaved=True),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_round_trip_is_bit_identical(tmp_path, name):
    import flax.linen as nn
    import jax

    model_type = name.split("-")[0]
    kv = 6 if model_type == "BAICHUAN2" else 2
    cfg = tiny_cfg(model_type, kv_heads=kv, **ROUND_TRIPS[name])
    model = build_model(cfg)
    ids = np.zeros((1, 8), np.int32)
    params = nn.meta.unbox(jax.device_get(model.init(jax.random.PRNGKey(7), ids, ids, ids)["params"]))
    # The init's norm weights are all ones (or zeros): noise makes every tensor distinct.
    params = jax.tree.map(
        lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.1, x.shape).astype(x.dtype),
        params,
    )
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="40KB")
    back = load_hf_params(str(tmp_path / "hf"), cfg, abstract_params(model))
    want, got = unrolled_leaves(params), unrolled_leaves(back)
    assert sorted(want) == sorted(got)
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=".".join(path))


def test_qk_interleaved_checkpoint_gives_the_same_logits(tmp_path):
    """One HF folder read into qk_interleaved=False and =True models: different stored columns,
    the same logits (the lane order is a permutation, moved on the way in and out)."""
    save_family(tmp_path, "qwen3", seed=9)
    halves = hand_cfg("qwen3")
    pairs = hand_cfg("qwen3", qk_interleaved=True)
    a = load_hf_params(str(tmp_path), halves, abstract_params(build_model(halves)))
    b = load_hf_params(str(tmp_path), pairs, abstract_params(build_model(pairs)))
    wq = ("layers_0", "attention", "wq", "kernel")
    assert not np.array_equal(unrolled_leaves(a)[wq], unrolled_leaves(b)[wq])
    tokens, positions, segments = packed_row()
    np.testing.assert_allclose(
        packed_logits(halves, a, tokens, positions, segments),
        packed_logits(pairs, b, tokens, positions, segments),
        atol=2e-5,
    )


# ---------------------------------------------------------------------------------- bad input


def test_folder_of_another_family_is_refused(tmp_path):
    save_family(tmp_path, "gemma")
    cfg = hand_cfg("qwen2")
    with pytest.raises(
        CheckpointError, match="GemmaForCausalLM model, but model_type QWEN2 is a Qwen2ForCausalLM"
    ):
        load_hf_params(str(tmp_path), cfg, abstract_params(build_model(cfg)))
    with pytest.raises(CheckpointError, match="cannot be read as model_type 'QWEN2'. Use GEMMA"):
        import_hf(str(tmp_path), model_type="QWEN2")


def test_export_refuses_what_the_class_cannot_express(tmp_path):
    cfg = hand_cfg("qwen2", o_bias=True)
    with pytest.raises(CheckpointError, match="Qwen2ForCausalLM always has q/k/v biases and no o_proj bias"):
        export_hf(random_params(cfg), cfg, str(tmp_path / "a"))
    gemma_swiglu = hand_cfg("gemma", add_unit_offset=False)
    with pytest.raises(CheckpointError, match="norm_unit_offset=False .HF's GemmaForCausalLM has True"):
        export_hf(random_params(gemma_swiglu), gemma_swiglu, str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_windows_on_scattered_layers_are_refused(tmp_path):
    save_family(tmp_path, "qwen2")
    patch_config(str(tmp_path), layer_types=["sliding_attention", "full_attention"], sliding_window=4)
    with pytest.raises(CheckpointError, match=r"windows layers \[0\].*max_window_layers"):
        import_hf(str(tmp_path))


def test_training_start_loads_an_hf_folder_into_a_scanned_fused_model(tmp_path):
    """ckpt_type="hf" (load_hf_into) into a scanned INTERNLM3 with a fused wqkv: the LLaMA-named
    tensors are fused, stacked and placed, and the model gives transformers' logits."""
    import flax
    import jax

    from internevo_jax.hf import load_hf_into
    from internevo_jax.model import unstack_layers

    save_random_hf(str(tmp_path), "llama", seed=11)
    patch_config(
        str(tmp_path), architectures=["InternLM3ForCausalLM"], model_type="internlm3", attention_bias=None
    )
    cfg = tiny_cfg("INTERNLM3", kv_heads=2, enable_qkv_fusion=True, scan_layers=True)
    abstract = abstract_params(build_model(cfg))
    assert abstract["layers"]["attention"]["wqkv"]["kernel"].shape[0] == 2  # stacked layers

    @flax.struct.dataclass
    class State:
        params: dict

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    zeros = State(params=jax.tree.map(lambda x: jax.numpy.zeros(x.shape, x.dtype), abstract))
    loaded = load_hf_into(
        zeros,
        State(params=jax.tree.map(lambda _: device, abstract)),
        str(tmp_path),
        cfg,
        frozenset({"model"}),
    )
    unrolled_cfg = tiny_cfg("INTERNLM3", kv_heads=2, enable_qkv_fusion=True)
    params = jax.tree.map(np.asarray, unstack_layers(loaded.params))

    def llama_logits(folder, tokens):
        from family_helpers import hf_logits

        patch_config(folder, architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False)
        return hf_logits(folder, tokens)

    assert packed_diff(unrolled_cfg, params, str(tmp_path), reference=llama_logits) < TOL


def test_internevo_from_hf_model_type_loads_the_hf_folder_of_its_family(tmp_path):
    """InternEvo's 7B_hf.py: model_type INTERNLM_FROM_HF, adapt_hf=True, ckpt_type "hf_model" on an
    HF InternLM folder (LlamaForCausalLM with attention biases) -- here the INTERNLM model."""
    source = tiny_cfg("INTERNLM", kv_heads=6)
    params = random_params(source, seed=5)
    export_hf(params, source, str(tmp_path / "hf"), dtype="fp32")
    cfg = tiny_cfg("INTERNLM_FROM_HF", kv_heads=6, no_bias=False, adapt_hf=True)
    assert cfg.model.qk_interleaved is False  # the HF layout's rotary halves
    loaded = load_hf_params(str(tmp_path / "hf"), cfg, abstract_params(build_model(cfg)))
    assert packed_diff(cfg, loaded, str(tmp_path / "hf")) < TOL
