"""InternLM3ForCausalLM, the remote-code class of the released InternLM3 checkpoints: the layout of
INTERNLM3. LLaMA's tensor names, with separate switches for the q/k/v biases (qkv_bias) and the
o_proj bias (bias); a model with enable_qkv_fusion=True is split into q/k/v on the way."""

from __future__ import annotations

from internevo_jax.hf.families.llama import LAYER, TOP, tokenizer_fields
from internevo_jax.hf.spec import HFMapping

AUTO_MAP = {
    "AutoConfig": "configuration_internlm3.InternLM3Config",
    "AutoModel": "modeling_internlm3.InternLM3Model",
    "AutoModelForCausalLM": "modeling_internlm3.InternLM3ForCausalLM",
}

MAPPING = HFMapping(
    families=("INTERNLM3",),
    architecture="InternLM3ForCausalLM",
    hf_model_type="internlm3",
    top=TOP,
    layer=LAYER,
    bias_fields=lambda args: {"qkv_bias": bool(args.qkv_bias), "bias": bool(args.out_bias)},
    read_bias=lambda config: (bool(config.get("qkv_bias", False)), bool(config.get("bias", False))),
    tokenizer_fields=tokenizer_fields,
    model_type_for=lambda config: "INTERNLM3",
    model_type_hint="INTERNLM3",
    description="InternLM3ForCausalLM",
    bias_hint=(
        " The HF config's qkv_bias / bias and the model's biases disagree: set model.qkv_bias and "
        "model.o_bias (or model.no_bias) to match."
    ),
    extra_config=lambda args: {"auto_map": dict(AUTO_MAP), "attention_dropout": 0.0, "mlp_bias": False},
    remote_code_note=(
        "InternLM3ForCausalLM is remote code in transformers: copy configuration_internlm3.py and "
        "modeling_internlm3.py from a released InternLM3 model into %s, or pass --remote_code DIR, "
        "before loading with trust_remote_code=True"
    ),
)
