"""The mixture-of-experts layouts against transformers' own classes in fp32 (random weights), both
directions: MixtralForCausalLM (MIXTRALMOE), Qwen2MoeForCausalLM (QWEN2MOE, shared expert) and
Qwen3MoeForCausalLM (QWEN3MOE); top-k 1 and 2, norm_topk_prob on and off; bit-identical round
trips (unrolled and scanned); and the errors for what one side cannot express."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_helpers import hf_logits, patch_config
from hf_helpers import logits_of, random_params, tiny_cfg

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf import export_hf, import_hf, load_hf_params
from internevo_jax.hf.tensors import tensor_map, unrolled_leaves
from internevo_jax.model import abstract_params, build_model, unstack_layers

TOL = 5e-5  # measured 1e-6 .. 1.1e-5 (docs/hf.md)
HIDDEN, VOCAB, EXPERTS, EXPERT_SIZE, HEAD_DIM = 32, 64, 4, 16, 16

# name -> (model_type, transformers kind, top_k, normalised top-k, shared experts, extra HF fields)
CASES = {
    "mixtral-top2": ("MIXTRALMOE", "mixtral", 2, True, 0, {}),
    "mixtral-top1-window": ("MIXTRALMOE", "mixtral", 1, True, 0, dict(sliding_window=3)),
    "qwen2moe-top2-norm-shared2": ("QWEN2MOE", "qwen2_moe", 2, True, 2, {}),
    "qwen2moe-top1-shared1": ("QWEN2MOE", "qwen2_moe", 1, False, 1, {}),
    "qwen3moe-top2": ("QWEN3MOE", "qwen3_moe", 2, False, 0, {}),
    "qwen3moe-top2-norm": ("QWEN3MOE", "qwen3_moe", 2, True, 0, {}),
}


def hf_config(name: str):
    import transformers as t

    model_type, kind, top_k, norm, shared, extra = CASES[name]
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        rope_theta=10000.0,
        num_experts_per_tok=top_k,
        attn_implementation="eager",
    )
    if kind == "mixtral":
        return t.MixtralConfig(**fields, intermediate_size=EXPERT_SIZE, num_local_experts=EXPERTS, **extra)
    fields.update(moe_intermediate_size=EXPERT_SIZE, num_experts=EXPERTS, norm_topk_prob=norm, **extra)
    if kind == "qwen2_moe":
        return t.Qwen2MoeConfig(**fields, shared_expert_intermediate_size=shared * EXPERT_SIZE)
    return t.Qwen3MoeConfig(**fields, head_dim=HEAD_DIM)


def save_random_moe(folder: str, name: str, seed: int = 0) -> None:
    """A random transformers MoE model (random weights, not HF's init) saved as shards."""
    import torch
    import transformers as t

    config = hf_config(name)
    cls = {
        "mixtral": t.MixtralForCausalLM,
        "qwen2_moe": t.Qwen2MoeForCausalLM,
        "qwen3_moe": t.Qwen3MoeForCausalLM,
    }[CASES[name][1]]
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in pname else torch.randn_like(p) * 0.3)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")


def hand_cfg(name: str, **extra):
    """Our config of case `name`, written by hand."""
    model_type, _, top_k, norm, shared, hf_extra = CASES[name]
    model = dict(
        hidden_size=HIDDEN,
        num_attention_heads=4,
        vocab_size=VOCAB,
        mlp_ratio=EXPERT_SIZE / HIDDEN,
        multiple_of=16,
        layer_norm_epsilon=1e-5,
        num_experts=EXPERTS,
        top_k=top_k,
        moe_type="Dropless",
        moe_layer_kwargs={"normalize_expert_weights": norm},
        num_shared_experts=shared,
        qkv_bias=model_type == "QWEN2MOE",
        o_bias=False,
    )
    if model_type == "QWEN3MOE":
        model["head_dim"] = HEAD_DIM
    if "sliding_window" in hf_extra:
        model.update(use_sliding_window=True, sliding_window=hf_extra["sliding_window"], max_window_layers=0)
    model.update(extra)
    return tiny_cfg(model_type, kv_heads=2, **model)


def tokens(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (2, 12))


def diff(cfg, params, folder: str) -> float:
    ids = tokens()
    return float(np.abs(logits_of(cfg, params, ids) - hf_logits(folder, ids)).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_import_matches_transformers(tmp_path, name):
    save_random_moe(str(tmp_path), name, seed=len(name))
    params, cfg = import_hf(str(tmp_path), dtype="torch.float32")
    model_type, _, top_k, norm, shared, _ = CASES[name]
    m = cfg.model
    assert (cfg.model_type, m.num_experts, m.top_k, m.moe_type) == (model_type, EXPERTS, top_k, "Dropless")
    assert m.moe_layer_kwargs == {"normalize_expert_weights": norm} and m.num_shared_experts == shared
    assert build_model(cfg).args.moe.expert_hidden_size == EXPERT_SIZE
    assert diff(cfg, params, str(tmp_path)) < TOL
    # ckpt_type="hf": the same folder into a config written by hand.
    hand = hand_cfg(name)
    loaded = load_hf_params(str(tmp_path), hand, abstract_params(build_model(hand)))
    assert diff(hand, loaded, str(tmp_path)) < TOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, name):
    cfg = hand_cfg(name)
    params = random_params(cfg, seed=3)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="30KB")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    model_type, kind, top_k, norm, shared, _ = CASES[name]
    assert config["model_type"] == kind and config["num_experts_per_tok"] == top_k
    assert config["output_router_logits"] is False and config["router_aux_loss_coef"] == 1.0
    if kind != "mixtral":
        assert config["norm_topk_prob"] is norm and config["moe_intermediate_size"] == EXPERT_SIZE
        assert config["decoder_sparse_step"] == 1 and config["mlp_only_layers"] == []
    if kind == "qwen2_moe":
        assert config["shared_expert_intermediate_size"] == shared * EXPERT_SIZE
    assert diff(cfg, params, str(tmp_path / "hf")) < TOL


def test_gshard_exports_as_dropless_routing(tmp_path):
    """GShard holds the same weights: without a capacity limit it is HF's routing exactly."""
    cfg = hand_cfg("qwen3moe-top2", moe_type="GShard", moe_layer_kwargs={"capacity_factor": None})
    params = random_params(cfg, seed=5)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["norm_topk_prob"] is True  # GShard renormalises the kept top-k weights
    assert diff(cfg, params, str(tmp_path / "hf")) < TOL


ROUND_TRIPS = {
    "MIXTRALMOE": ("mixtral-top2", {}),
    "QWEN2MOE": ("qwen2moe-top2-norm-shared2", {}),
    "QWEN3MOE-interleaved": ("qwen3moe-top2", dict(qk_interleaved=True)),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_round_trip_is_bit_identical(tmp_path, name):
    case, extra = ROUND_TRIPS[name]
    cfg = hand_cfg(case, **extra)
    params = random_params(cfg, seed=7)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="20KB")
    back = load_hf_params(str(tmp_path / "hf"), cfg, abstract_params(build_model(cfg)))
    want, got = unrolled_leaves(params), unrolled_leaves(back)
    assert sorted(want) == sorted(got)
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=".".join(path))
    # Into a scanned model: expert arrays stacked [L, E, ...].
    scanned = hand_cfg(case, scan_layers=True, **extra)
    stacked = load_hf_params(str(tmp_path / "hf"), scanned, abstract_params(build_model(scanned)))
    assert stacked["layers"]["feed_forward"]["w1"].shape == (2, EXPERTS, HIDDEN, EXPERT_SIZE)
    for path, value in unrolled_leaves(unstack_layers(stacked)).items():
        np.testing.assert_array_equal(value, want[path], err_msg=".".join(path))


def test_exported_tensor_names(tmp_path):
    cfg = hand_cfg("qwen2moe-top1-shared1")
    params = random_params(cfg, seed=2)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    index = tmp_path / "hf" / "model.safetensors.index.json"
    from hf_helpers import load_state

    state = load_state(str(tmp_path / "hf"))
    names = set(state) if not index.exists() else set(json.loads(index.read_text())["weight_map"])
    layer = {n[len("model.layers.1.") :] for n in names if n.startswith("model.layers.1.")}
    assert {n for n in layer if n.startswith("mlp.")} == {
        "mlp.gate.weight",
        "mlp.shared_expert_gate.weight",
        *(f"mlp.shared_expert.{p}_proj.weight" for p in ("gate", "up", "down")),
        *(f"mlp.experts.{e}.{p}_proj.weight" for e in range(EXPERTS) for p in ("gate", "up", "down")),
    }
    ff = params["layers_1"]["feed_forward"]
    np.testing.assert_array_equal(state["model.layers.1.mlp.gate.weight"].numpy(), ff["gate"].T)
    np.testing.assert_array_equal(
        state["model.layers.1.mlp.experts.2.gate_proj.weight"].numpy(), ff["w1"][2].T
    )
    np.testing.assert_array_equal(
        state["model.layers.1.mlp.experts.3.down_proj.weight"].numpy(), ff["w2"][3].T
    )
    np.testing.assert_array_equal(
        state["model.layers.1.mlp.shared_expert_gate.weight"].numpy(), ff["coefficient"]["kernel"].T
    )


@pytest.mark.parametrize(
    "family, path, name, transpose",
    [
        (
            "MIXTRAL",
            ("layers_1", "feed_forward", "gate"),
            "model.layers.1.block_sparse_moe.gate.weight",
            True,
        ),
        (
            "MIXTRAL",
            ("layers_1", "feed_forward", "expert_12", "w3", "kernel"),
            "model.layers.1.block_sparse_moe.experts.12.w3.weight",
            True,
        ),
        (
            "QWEN3MOE",
            ("layers_0", "feed_forward", "expert_0", "w2", "kernel"),
            "model.layers.0.mlp.experts.0.down_proj.weight",
            True,
        ),
        (
            "QWEN3MOE",
            ("layers_0", "attention", "q_norm", "scale"),
            "model.layers.0.self_attn.q_norm.weight",
            False,
        ),
    ],
)
def test_name_table(family, path, name, transpose):
    m = tensor_map(family, path)
    assert (m.hf, m.transpose) == (name, transpose)


# ---------------------------------------------------------------------------------- bad input


def test_internlm_moe_has_no_layout(tmp_path):
    cfg = tiny_cfg("INTERNLM_MoE", num_experts=4, top_k=2)
    layouts = "MixtralForCausalLM .*Qwen2MoeForCausalLM .*Qwen3MoeForCausalLM"
    with pytest.raises(CheckpointError, match=f"'INTERNLM_MoE' cannot be converted.*{layouts}"):
        export_hf(random_params(cfg), cfg, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    save_random_moe(str(tmp_path / "in"), "mixtral-top2")
    with pytest.raises(CheckpointError, match=f"'INTERNLM_MoE' cannot be converted.*{layouts}"):
        import_hf(str(tmp_path / "in"), model_type="INTERNLM_MoE")


def test_moe_folder_and_dense_model_do_not_mix(tmp_path):
    save_random_moe(str(tmp_path / "moe"), "qwen2moe-top1-shared1")
    dense = tiny_cfg("QWEN2", kv_heads=2, hidden_size=HIDDEN, num_attention_heads=4, vocab_size=VOCAB)
    with pytest.raises(
        CheckpointError, match="holds a Qwen2MoeForCausalLM model, but model_type QWEN2 is a Qwen2For"
    ):
        load_hf_params(str(tmp_path / "moe"), dense, abstract_params(build_model(dense)))
    with pytest.raises(CheckpointError, match="cannot be read as model_type 'QWEN2'. Use QWEN2MOE"):
        import_hf(str(tmp_path / "moe"), model_type="QWEN2")
    # A dense Qwen3 folder into a QWEN3MOE model.
    dense3 = tiny_cfg("QWEN3", kv_heads=2, hidden_size=HIDDEN, num_attention_heads=4, vocab_size=VOCAB)
    export_hf(random_params(dense3), dense3, str(tmp_path / "dense"), dtype="fp32")
    moe = hand_cfg("qwen3moe-top2")
    with pytest.raises(
        CheckpointError, match="holds a Qwen3ForCausalLM model, but model_type QWEN3MOE is a Qwen3Moe"
    ):
        load_hf_params(str(tmp_path / "dense"), moe, abstract_params(build_model(moe)))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(decoder_sparse_step=2), "decoder_sparse_step=2 .dense MLPs in some layers"),
        (dict(mlp_only_layers=[1]), r"mlp_only_layers=\[1\]"),
        (dict(first_k_dense_replace=1), "first_k_dense_replace=1"),
        (
            dict(shared_expert_intermediate_size=24),
            "shared_expert_intermediate_size=24 with moe_intermediate_size=16",
        ),
        (dict(num_experts=1), "num_experts=1 .a mixture of experts needs at least 2"),
        (dict(use_sliding_window=True, sliding_window=4, layer_types=None), "Qwen2-MoE's sliding window"),
    ],
)
def test_config_json_moe_fields_that_cannot_be_read(tmp_path, fields, message):
    save_random_moe(str(tmp_path), "qwen2moe-top1-shared1")
    patch_config(str(tmp_path), **fields)
    with pytest.raises(CheckpointError, match=message):
        import_hf(str(tmp_path))


@pytest.mark.parametrize(
    "case, settings, message",
    [
        (
            "mixtral-top2",
            dict(num_shared_experts=1),
            "num_shared_experts=1 .HF's MixtralForCausalLM has no shared",
        ),
        (
            "mixtral-top2",
            dict(moe_layer_kwargs={"normalize_expert_weights": False}),
            "normalize_expert_weights=False .HF's MixtralForCausalLM always divides",
        ),
        ("mixtral-top2", dict(qkv_bias=True), "MixtralForCausalLM has no attention biases"),
        ("qwen3moe-top2", dict(moe_layer_kwargs={"scoring_func": "sigmoid"}), "scoring_func='sigmoid'"),
        ("qwen3moe-top2", dict(moe_layer_kwargs={"routed_scaling_factor": 2.5}), "routed_scaling_factor=2.5"),
        (
            "qwen3moe-top2",
            dict(num_shared_experts=1),
            "num_shared_experts=1 .HF's Qwen3MoeForCausalLM has no",
        ),
        ("qwen3moe-top2", dict(qkv_bias=True), "Qwen3MoeForCausalLM has one attention_bias switch"),
        (
            "qwen2moe-top1-shared1",
            dict(num_shared_experts=0),
            "num_shared_experts=0 .HF's Qwen2MoeForCausalLM always",
        ),
        ("qwen2moe-top1-shared1", dict(o_bias=True), "Qwen2MoeForCausalLM has no o_proj bias"),
        (
            "qwen2moe-top1-shared1",
            dict(use_sliding_window=True, sliding_window=4),
            "QWEN2MOE model with use_sliding",
        ),
        (
            "mixtral-top1-window",
            dict(max_window_layers=1),
            "windows every layer or none.*max_window_layers=1",
        ),
    ],
)
def test_export_refuses_what_the_class_cannot_express(tmp_path, case, settings, message):
    cfg = hand_cfg(case, **settings)
    with pytest.raises(CheckpointError, match=message):
        export_hf(random_params(cfg), cfg, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
