"""BaichuanForCausalLM, the remote-code class of the released Baichuan2-7B checkpoints: the layout of
BAICHUAN2.

LLaMA's names except the fused `self_attn.W_pack` = [q; k; v] rows, the same order as our concat
wqkv; no biases; the NormHead `lm_head.weight` is stored unnormalised (the class normalises it).
Only the RoPE models (7B) are this architecture's maths here; Baichuan2-13B uses ALiBi.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.families.llama import LAYER, TOP, tokenizer_fields
from internevo_jax.hf.spec import LLAMA_FIXED, HFMapping
from internevo_jax.names import QKV_CONCAT

AUTO_MAP = {
    "AutoConfig": "configuration_baichuan.BaichuanConfig",
    "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM",
}


def _bias_fields(args: Any) -> dict:
    if args.qkv_bias or args.out_bias:
        raise CheckpointError(
            "HF's BaichuanForCausalLM has no attention biases; this model has some (model.no_bias=False), "
            "so it cannot be exported as Baichuan."
        )
    return {}


_LAYER = {k: v for k, v in LAYER.items() if k[1] not in ("wq", "wk", "wv")}

MAPPING = HFMapping(
    families=("BAICHUAN2",),
    architecture="BaichuanForCausalLM",
    hf_model_type="baichuan",
    top=TOP,
    layer={**_LAYER, ("attention", "wqkv"): "self_attn.W_pack"},
    bias_fields=_bias_fields,
    read_bias=lambda config: (False, False),
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "BAICHUAN2",
    model_type_hint="BAICHUAN2",
    description="BaichuanForCausalLM (Baichuan2-7B)",
    bias_hint=" Baichuan2 has no attention biases: set model.no_bias=True.",
    qkv_layout=QKV_CONCAT,
    fixed={**LLAMA_FIXED, "norm_head": True},
    extra_config=lambda args: {"auto_map": dict(AUTO_MAP), "model_max_length": args.max_position_embeddings},
    remote_code_note=(
        "BaichuanForCausalLM is remote code in transformers: copy configuration_baichuan.py and "
        "modeling_baichuan.py from a released Baichuan2-7B model into %s, or pass --remote_code DIR, "
        "before loading with trust_remote_code=True"
    ),
)
