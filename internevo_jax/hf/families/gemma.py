"""transformers' GemmaForCausalLM: the layout of GEMMA.

LLaMA's tensor names; the class hard-wires the (1 + w) RMSNorm (the stored weights are the w),
the sqrt(hidden) embedding scale and the tanh-gelu GeGLU, and ties the head to the embedding
unless config.json says tie_word_embeddings=false (then lm_head.weight is written and read).
"""

from __future__ import annotations

from internevo_jax.hf.families.llama import LAYER, TOP, tokenizer_fields
from internevo_jax.hf.spec import LLAMA_FIXED, HFMapping, same_bias
from internevo_jax.names import GELU_TANH

_bias_fields, _read_bias = same_bias("attention_bias", "GemmaForCausalLM")

MAPPING = HFMapping(
    families=("GEMMA",),
    architecture="GemmaForCausalLM",
    hf_model_type="gemma",
    top=TOP,
    layer=LAYER,
    bias_fields=_bias_fields,
    read_bias=_read_bias,
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "GEMMA",
    model_type_hint="GEMMA",
    description="GemmaForCausalLM",
    bias_hint=" The HF config's attention_bias and the model's biases disagree: set model.no_bias to match.",
    fixed={**LLAMA_FIXED, "norm_unit_offset": True, "embed_scale": True, "mlp_activation": GELU_TANH},
    # "gelu" is what the first Gemma releases wrote; transformers reads it as the tanh gelu.
    activations=("gelu_pytorch_tanh", "gelu", "gelu_new"),
    tie_default=True,
    extra_config=lambda args: {"attention_dropout": 0.0},
)
