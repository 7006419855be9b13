"""transformers' LlamaForCausalLM: the layout of INTERNLM (InternLM1 = LLaMA with attention_bias=true)
and LLAMA2 (alias LLAMA). Its tensor names are shared by the Qwen, Gemma and InternLM3 layouts."""

from __future__ import annotations

from internevo_jax.hf.spec import HFMapping, same_bias
from internevo_jax.hf.tokenizer import adds_dummy_prefix

TOP = {
    ("embedding", "embedding"): "model.embed_tokens.weight",
    ("norm", "scale"): "model.norm.weight",
    ("head", "kernel"): "lm_head.weight",
}
LAYER = {
    ("attention_norm", "scale"): "input_layernorm.weight",
    ("ffn_norm", "scale"): "post_attention_layernorm.weight",
    ("attention", "wq"): "self_attn.q_proj",
    ("attention", "wk"): "self_attn.k_proj",
    ("attention", "wv"): "self_attn.v_proj",
    ("attention", "wo"): "self_attn.o_proj",
    # InternEvo's w1/w3/w2 are SwiGLU's gate/up/down (its own converter once swapped w2 and w3).
    ("feed_forward", "w1"): "mlp.gate_proj",
    ("feed_forward", "w3"): "mlp.up_proj",
    ("feed_forward", "w2"): "mlp.down_proj",
}
# LAYER without the dense MLP: the attention and norms an MoE layout shares.
ATTENTION_LAYER = {k: v for k, v in LAYER.items() if k[0] != "feed_forward"}


def tokenizer_fields(tokenizer_path: str) -> dict:
    """transformers' LlamaTokenizer, told whether the sentencepiece model adds a dummy prefix."""
    fields: dict = {"tokenizer_class": "LlamaTokenizer", "legacy": True}
    prefix = adds_dummy_prefix(tokenizer_path)
    if prefix is not None:
        # transformers' LLaMA tokenizer prepends "▁" unless told otherwise; the InternLM
        # tokenizers do not, and without this the first word would get another id.
        fields["add_prefix_space"] = prefix
    return fields


_bias_fields, _read_bias = same_bias("attention_bias", "LlamaForCausalLM")

MAPPING = HFMapping(
    families=("INTERNLM", "LLAMA2"),
    architecture="LlamaForCausalLM",
    hf_model_type="llama",
    top=TOP,
    layer=LAYER,
    bias_fields=_bias_fields,
    read_bias=_read_bias,
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "INTERNLM" if _read_bias(config)[0] else "LLAMA2",
    model_type_hint="LLAMA2 (or INTERNLM when it has attention biases)",
    description="LlamaForCausalLM (InternLM1 with attention_bias=true, LLaMA2)",
    bias_hint=(
        " The HF config's attention_bias and the model's biases disagree: InternLM1 (INTERNLM) has q/k/v/o "
        "biases (attention_bias=true); for a checkpoint without them use LLAMA2 or model.no_bias=True."
    ),
    extra_config=lambda args: {"attention_dropout": 0.0, "mlp_bias": False},
)
