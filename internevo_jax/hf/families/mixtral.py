"""transformers' MixtralForCausalLM: the layout of MIXTRALMOE.

LLaMA's attention names without any bias, and in every layer block_sparse_moe.gate (router,
[E, H]) and block_sparse_moe.experts.{e}.w1 / w3 / w2 (SwiGLU gate / up / down, InternEvo's own
names). The router always divides the top-k softmax weights by their sum; there are no shared
experts. sliding_window (or null) windows every layer.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.families.llama import ATTENTION_LAYER, TOP, tokenizer_fields
from internevo_jax.hf.families.qwen import QWEN_FIXED, every_layer_window, every_layer_window_model
from internevo_jax.hf.spec import EXPERT, HFMapping, MoELayout


def _bias_fields(args: Any) -> dict:
    if args.qkv_bias or args.out_bias:
        raise CheckpointError(
            "HF's MixtralForCausalLM has no attention biases; this model has "
            f"qkv_bias={args.qkv_bias}, o_bias={args.out_bias} (MIXTRALMOE defaults to q/k/v biases: set "
            "model.qkv_bias=False), so it cannot be exported as Mixtral."
        )
    return {}


MAPPING = HFMapping(
    families=("MIXTRAL",),
    architecture="MixtralForCausalLM",
    hf_model_type="mixtral",
    top=TOP,
    layer={
        **ATTENTION_LAYER,
        ("feed_forward", "gate"): "block_sparse_moe.gate.weight",
        ("feed_forward", EXPERT, "w1"): "block_sparse_moe.experts.{e}.w1",
        ("feed_forward", EXPERT, "w3"): "block_sparse_moe.experts.{e}.w3",
        ("feed_forward", EXPERT, "w2"): "block_sparse_moe.experts.{e}.w2",
    },
    bias_fields=_bias_fields,
    read_bias=lambda config: (False, False),
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "MIXTRALMOE",
    model_type_hint="MIXTRALMOE",
    description="MixtralForCausalLM",
    bias_hint=" Mixtral has no attention biases: set model.qkv_bias=False (MIXTRALMOE defaults to q/k/v biases).",
    fixed=QWEN_FIXED,
    extra_config=lambda args: {
        "attention_dropout": 0.0,
        "sliding_window": every_layer_window(args, "MixtralForCausalLM"),
    },
    extra_model=lambda config, source: every_layer_window_model(config.get("sliding_window")),
    moe=MoELayout(
        experts_keys=("num_local_experts", "num_experts"),
        expert_size_key="intermediate_size",
        norm_topk_key=None,
        fixed_fields={"router_jitter_noise": 0.0},
    ),
)
