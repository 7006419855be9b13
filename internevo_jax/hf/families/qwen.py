"""transformers' Qwen2ForCausalLM and Qwen3ForCausalLM: the layouts of QWEN2 and QWEN3 (dense).

LLaMA's tensor names. Qwen2 hard-wires biases on q/k/v and none on o; Qwen3 has one
attention_bias switch and per-head q/k RMSNorm weights (self_attn.q_norm / k_norm). Both describe
sliding-window attention by use_sliding_window, sliding_window and max_window_layers (layers
from max_window_layers on are windowed), saved as layer_types by recent transformers.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.families.llama import LAYER, TOP, tokenizer_fields
from internevo_jax.hf.spec import LLAMA_FIXED, HFMapping, same_bias

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

MAPPINGS = (QWEN2, QWEN3)
