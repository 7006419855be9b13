"""InternLM1 with mixture-of-experts MLPs (model_type "INTERNLM_MoE", InternEvo's modeling_moe.py).

InternLM1's attention (q/k/v/o biases unless no_bias), and in every layer an MoE MLP (model/moe/):
GShard or Dropless routing, optional shared experts (`num_shared_experts`, or InternEvo's older
`moe_use_residual=True` for one) mixed in by softmax(Linear(H, 2)(x)). InternLM1's init: experts'
w1/w3 0.006, w2 0.006 scaled by depth, router and mixing weights 0.0015.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import FamilyDefaults, ModelArgs
from internevo_jax.model.causal_lm import CausalLM
from internevo_jax.model.registry import register_model


@register_model("INTERNLM_MoE")
class InternLMMoE(CausalLM):
    """InternLM1 attention + MoE MLPs (see CausalLM for the call)."""

    family = "INTERNLM_MoE"

    @classmethod
    def from_config(cls, cfg: Any) -> InternLMMoE:
        return cls(ModelArgs.from_config(cfg, family=FamilyDefaults(moe=True), post_norm=False))
