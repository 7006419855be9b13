"""InternLM2ForCausalLM, the remote-code class of the released InternLM2 checkpoints: the layout of
INTERNLM2.

The fused `wqkv` has the same per-kv-group row order on both sides (HF's InternLM2 reads it with
the "(h gs d)" split InternEvo uses: q heads of the group, then k, then v), so it maps to one HF
tensor and is only transposed (a model with enable_qkv_fusion=False is fused on the way).
"""

from __future__ import annotations

from internevo_jax.hf.spec import HFMapping, same_bias
from internevo_jax.names import QKV_GROUPED

# What the released InternLM2 checkpoints put in config.json to find their remote code.
AUTO_MAP = {
    "AutoConfig": "configuration_internlm2.InternLM2Config",
    "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
}
TOKENIZER_AUTO_MAP = {
    "AutoTokenizer": [
        "tokenization_internlm2.InternLM2Tokenizer",
        "tokenization_internlm2_fast.InternLM2TokenizerFast",
    ]
}

TOP = {
    ("embedding", "embedding"): "model.tok_embeddings.weight",
    ("norm", "scale"): "model.norm.weight",
    ("head", "kernel"): "output.weight",
}
LAYER = {
    ("attention_norm", "scale"): "attention_norm.weight",
    ("ffn_norm", "scale"): "ffn_norm.weight",
    ("attention", "wqkv"): "attention.wqkv",
    ("attention", "wo"): "attention.wo",
    ("feed_forward", "w1"): "feed_forward.w1",
    ("feed_forward", "w3"): "feed_forward.w3",
    ("feed_forward", "w2"): "feed_forward.w2",
}

_bias_fields, _read_bias = same_bias("bias", "InternLM2ForCausalLM")

MAPPING = HFMapping(
    families=("INTERNLM2",),
    architecture="InternLM2ForCausalLM",
    hf_model_type="internlm2",
    top=TOP,
    layer=LAYER,
    bias_fields=_bias_fields,
    read_bias=_read_bias,
    # The InternLM2 tokenizer classes are remote code, like the model's (see --remote_code).
    tokenizer_fields=lambda path: {"tokenizer_class": "InternLM2Tokenizer", "auto_map": TOKENIZER_AUTO_MAP},
    model_type_for=lambda config: "INTERNLM2",
    model_type_hint="INTERNLM2",
    description="InternLM2ForCausalLM",
    bias_hint=" The HF config's \"bias\" and the model's no_bias setting disagree: set model.no_bias to match.",
    qkv_layout=QKV_GROUPED,
    extra_config=lambda args: {"auto_map": dict(AUTO_MAP), "attn_implementation": "eager"},
    remote_code_note=(
        "InternLM2ForCausalLM is remote code in transformers: copy configuration_internlm2.py, "
        "modeling_internlm2.py (and tokenization_internlm2*.py) from a released InternLM2 "
        "model into %s, or pass --remote_code DIR, before loading with trust_remote_code=True"
    ),
)
