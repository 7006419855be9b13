"""InternLM2 (model_type "INTERNLM2", InternEvo's "INTERNLM2_PUBLIC") and InternLM3 ("INTERNLM3").

Grouped-query attention with one fused `wqkv` projection laid out per kv group (the group's
query heads, then its key head, then its value head: InternEvo's and HF InternLM2's layout),
no biases in the released models (`no_bias=True`), rope_base from the config (1e6 for 7B),
InternEvo's 0.02 init. `apply_post_layer_norm=True` gives post-norm blocks and, as in InternEvo,
no final norm. `enable_qkv_fusion=False` keeps separate wq/wk/wv instead.

InternEvo builds INTERNLM3 with the same model class; its configs turn the fusion off, and its
Hugging Face layout (InternLM3ForCausalLM) is LLaMA's, so it is a family of its own here.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import INTERNEVO_02_INIT, FamilyDefaults, ModelArgs
from internevo_jax.model.causal_lm import CausalLM, post_norm_overrides
from internevo_jax.model.registry import register_model

FUSED_BY_DEFAULT = FamilyDefaults(qkv_fusion=True)  # InternEvo's InternLM2: enable_qkv_fusion=True


@register_model("INTERNLM2")
class InternLM2(CausalLM):
    """InternLM2: fused grouped wqkv, wo, SwiGLU MLP, RoPE, untied head (see CausalLM)."""

    family = "INTERNLM2"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        return cls(
            ModelArgs.from_config(
                cfg, init=INTERNEVO_02_INIT, family=FUSED_BY_DEFAULT, **post_norm_overrides(cfg)
            )
        )


@register_model("INTERNLM3")
class InternLM3(InternLM2):
    """InternLM3: InternLM2's model (GQA, rope_base 5e7 in its config), written to HF as
    InternLM3ForCausalLM (separate q/k/v/o projections, LLaMA's names)."""

    family = "INTERNLM3"


# InternEvo registers the model under this name; its configs use it.
register_model("INTERNLM2_PUBLIC", InternLM2)
