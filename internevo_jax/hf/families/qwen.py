"""transformers' Qwen2ForCausalLM and Qwen3ForCausalLM: the layouts of QWEN2 and QWEN3 (dense), and
Qwen2MoeForCausalLM and Qwen3MoeForCausalLM: the layouts of QWEN2MOE and QWEN3MOE.

LLaMA's tensor names. Qwen2 hard-wires biases on q/k/v and none on o; Qwen3 has one
attention_bias switch and per-head q/k RMSNorm weights (self_attn.q_norm / k_norm). Both describe
sliding-window attention by use_sliding_window, sliding_window and max_window_layers (layers
from max_window_layers on are windowed), saved as layer_types by recent transformers.

The MoE classes replace the MLP by mlp.gate (router, [E, H]) and mlp.experts.{e}.gate_proj /
up_proj / down_proj; Qwen2-MoE adds one shared expert (mlp.shared_expert.*, width
shared_expert_intermediate_size) mixed in by sigmoid(mlp.shared_expert_gate(x)), Qwen3-MoE has none
and Qwen3's attention. Every layer is MoE here (decoder_sparse_step 1, no mlp_only_layers).
"""

from __future__ import annotations

from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.families.llama import ATTENTION_LAYER, LAYER, TOP, tokenizer_fields
from internevo_jax.hf.spec import EXPERT, LLAMA_FIXED, HFMapping, MoELayout, same_bias

WINDOWED = "sliding_attention"
QWEN_FIXED = {k: v for k, v in LLAMA_FIXED.items() if k != "sliding_window"}


def window_config(args: Any) -> dict:
    """config.json's sliding-window fields for ModelArgs `args`."""
    on = args.sliding_window is not None
    return {
        "use_sliding_window": on,
        "sliding_window": args.sliding_window,
        "max_window_layers": args.max_window_layers if on else args.num_layers,
    }


def window_model(config: dict, source: str) -> dict:
    """Our model keys for the sliding window a Qwen config.json describes."""
    window = config.get("sliding_window")
    types = config.get("layer_types")
    if types:
        windowed = [i for i, kind in enumerate(types) if kind == WINDOWED]
        if not windowed:
            return {"use_sliding_window": False}
        first = windowed[0]
        if windowed != list(range(first, len(types))) or window is None:
            raise CheckpointError(
                f"{source}/config.json windows layers {windowed} (layer_types); only a window on every layer "
                "from some layer on (Qwen2's max_window_layers) is implemented here."
            )
        return {"use_sliding_window": True, "sliding_window": int(window), "max_window_layers": first}
    if not config.get("use_sliding_window") or window is None:
        return {"use_sliding_window": False}
    return {
        "use_sliding_window": True,
        "sliding_window": int(window),
        "max_window_layers": int(config.get("max_window_layers", 0)),
    }


def _qwen2_bias_fields(args: Any) -> dict:
    if not (args.qkv_bias and not args.out_bias):
        raise CheckpointError(
            "HF's Qwen2ForCausalLM always has q/k/v biases and no o_proj bias; this model has "
            f"qkv_bias={args.qkv_bias}, o_bias={args.out_bias}, so it cannot be exported as Qwen2."
        )
    return {}


QWEN2 = HFMapping(
    families=("QWEN2",),
    architecture="Qwen2ForCausalLM",
    hf_model_type="qwen2",
    top=TOP,
    layer=LAYER,
    bias_fields=_qwen2_bias_fields,
    read_bias=lambda config: (True, False),
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "QWEN2",
    model_type_hint="QWEN2",
    description="Qwen2ForCausalLM",
    bias_hint=" Qwen2 has q/k/v biases and no o_proj bias: leave model.qkv_bias and model.o_bias unset.",
    fixed=QWEN_FIXED,
    extra_config=lambda args: {"attention_dropout": 0.0, **window_config(args)},
    extra_model=window_model,
)

_qwen3_bias_fields, _qwen3_read_bias = same_bias("attention_bias", "Qwen3ForCausalLM")

QWEN3 = HFMapping(
    families=("QWEN3",),
    architecture="Qwen3ForCausalLM",
    hf_model_type="qwen3",
    top=TOP,
    layer={
        **LAYER,
        ("attention", "q_norm", "scale"): "self_attn.q_norm.weight",
        ("attention", "k_norm", "scale"): "self_attn.k_norm.weight",
    },
    bias_fields=_qwen3_bias_fields,
    read_bias=_qwen3_read_bias,
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "QWEN3",
    model_type_hint="QWEN3",
    description="Qwen3ForCausalLM",
    bias_hint=" The HF config's attention_bias and the model's biases disagree: set model.no_bias to match.",
    fixed={**QWEN_FIXED, "qk_norm": True},
    extra_config=lambda args: {"attention_dropout": 0.0, **window_config(args)},
    extra_model=window_model,
)

# ---------------------------------------------------------------------------- mixture of experts


def every_layer_window(args: Any, architecture: str) -> int | None:
    """The window of a class that windows every layer or none (Mixtral, Qwen3-MoE); None: none."""
    if args.sliding_window is None:
        return None
    if args.max_window_layers != 0:
        raise CheckpointError(
            f"HF's {architecture} windows every layer or none; this model windows the layers from "
            f"model.max_window_layers={args.max_window_layers} on, so it cannot be exported in this layout "
            "(set max_window_layers=0 to window every layer)."
        )
    return args.sliding_window


def every_layer_window_model(window: Any) -> dict:
    """Our model keys for a window on every layer (None: no window)."""
    if window is None or int(window) <= 0:
        return {"use_sliding_window": False}
    return {"use_sliding_window": True, "sliding_window": int(window), "max_window_layers": 0}


QWEN_MOE_FIXED = {"decoder_sparse_step": 1, "mlp_only_layers": []}


def _qwen_moe_layer(shared: bool) -> dict:
    layer = {
        **ATTENTION_LAYER,
        ("feed_forward", "gate"): "mlp.gate.weight",
        ("feed_forward", EXPERT, "w1"): "mlp.experts.{e}.gate_proj",
        ("feed_forward", EXPERT, "w3"): "mlp.experts.{e}.up_proj",
        ("feed_forward", EXPERT, "w2"): "mlp.experts.{e}.down_proj",
    }
    if shared:
        layer.update(
            {
                ("feed_forward", "shared_experts", "w1"): "mlp.shared_expert.gate_proj",
                ("feed_forward", "shared_experts", "w3"): "mlp.shared_expert.up_proj",
                ("feed_forward", "shared_experts", "w2"): "mlp.shared_expert.down_proj",
                ("feed_forward", "coefficient"): "mlp.shared_expert_gate",
            }
        )
    return layer


def _qwen2_moe_bias_fields(args: Any) -> dict:
    if args.out_bias:
        raise CheckpointError(
            "HF's Qwen2MoeForCausalLM has no o_proj bias (and one qkv_bias switch for q/k/v); this model "
            "has model.o_bias=True, so it cannot be exported as Qwen2-MoE."
        )
    return {"qkv_bias": bool(args.qkv_bias)}


def _qwen2_moe_window(args: Any) -> dict:
    if args.sliding_window is not None:
        raise CheckpointError(
            "HF's Qwen2MoeForCausalLM windows every other layer below max_window_layers, which no window "
            "setting here reproduces: a QWEN2MOE model with use_sliding_window=True cannot be exported."
        )
    return {"use_sliding_window": False}


def _qwen2_moe_window_model(config: dict, source: str) -> dict:
    windowed = "sliding_attention" in (config.get("layer_types") or [])
    if windowed or (config.get("use_sliding_window") and config.get("sliding_window")):
        raise CheckpointError(
            f"{source}/config.json turns on Qwen2-MoE's sliding window (every other layer below "
            "max_window_layers), which is not implemented here; use a checkpoint with use_sliding_window=false."
        )
    return {"use_sliding_window": False}


QWEN2_MOE = HFMapping(
    families=("QWEN2MOE",),
    architecture="Qwen2MoeForCausalLM",
    hf_model_type="qwen2_moe",
    top=TOP,
    layer=_qwen_moe_layer(shared=True),
    bias_fields=_qwen2_moe_bias_fields,
    read_bias=lambda config: (bool(config.get("qkv_bias", True)), False),
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "QWEN2MOE",
    model_type_hint="QWEN2MOE",
    description="Qwen2MoeForCausalLM",
    bias_hint=(
        " Qwen2-MoE has q/k/v biases (qkv_bias, default true) and no o_proj bias: set model.qkv_bias to "
        "match and leave model.o_bias unset."
    ),
    fixed=QWEN_FIXED,
    extra_config=lambda args: {"attention_dropout": 0.0, **_qwen2_moe_window(args)},
    extra_model=_qwen2_moe_window_model,
    moe=MoELayout(
        experts_keys=("num_experts",),
        expert_size_key="moe_intermediate_size",
        norm_topk_key="norm_topk_prob",
        shared_size_key="shared_expert_intermediate_size",
        fixed_fields=QWEN_MOE_FIXED,
    ),
)


def _qwen3_moe_window(args: Any) -> dict:
    window = every_layer_window(args, "Qwen3MoeForCausalLM")
    return {"use_sliding_window": window is not None, "sliding_window": window}


def _qwen3_moe_window_model(config: dict, source: str) -> dict:
    return every_layer_window_model(
        config.get("sliding_window") if config.get("use_sliding_window") else None
    )


_qwen3_moe_bias_fields, _qwen3_moe_read_bias = same_bias("attention_bias", "Qwen3MoeForCausalLM")

QWEN3_MOE = HFMapping(
    families=("QWEN3MOE",),
    architecture="Qwen3MoeForCausalLM",
    hf_model_type="qwen3_moe",
    top=TOP,
    layer={
        **_qwen_moe_layer(shared=False),
        ("attention", "q_norm", "scale"): "self_attn.q_norm.weight",
        ("attention", "k_norm", "scale"): "self_attn.k_norm.weight",
    },
    bias_fields=_qwen3_moe_bias_fields,
    read_bias=_qwen3_moe_read_bias,
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "QWEN3MOE",
    model_type_hint="QWEN3MOE",
    description="Qwen3MoeForCausalLM",
    bias_hint=(
        " The HF config's attention_bias and the model's biases disagree: QWEN3MOE defaults to q/k/v "
        "biases, HF's Qwen3-MoE checkpoints have none (set model.qkv_bias=False)."
    ),
    fixed={**QWEN_FIXED, "qk_norm": True},
    extra_config=lambda args: {"attention_dropout": 0.0, **_qwen3_moe_window(args)},
    extra_model=_qwen3_moe_window_model,
    moe=MoELayout(
        # Official configs say num_experts; transformers 5 saves it as num_local_experts.
        experts_keys=("num_experts", "num_local_experts"),
        expert_size_key="moe_intermediate_size",
        norm_topk_key="norm_topk_prob",
        fixed_fields=QWEN_MOE_FIXED,
    ),
)

MAPPINGS = (QWEN2, QWEN3, QWEN2_MOE, QWEN3_MOE)
