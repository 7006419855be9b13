"""Mixtral (model_type "MIXTRALMOE", InternEvo's modeling_mixtral.py).

LLaMA-style attention with grouped kv heads (InternEvo's builder defaults q/k/v biases on and o
off; its 8x7B_mixtral.py and HF's Mixtral have none), optional sliding window, and in every layer
an MoE MLP (model/moe/) whose optional shared experts are mixed in by softmax(Linear(H, 2)(x)).
InternEvo gives it InternLM1's init constants.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import FamilyDefaults, ModelArgs
from internevo_jax.model.causal_lm import CausalLM, post_norm_overrides
from internevo_jax.model.registry import register_model


@register_model("MIXTRALMOE")
class Mixtral(CausalLM):
    """Mixtral: GQA attention, MoE MLPs, RoPE, untied head (see CausalLM)."""

    family = "MIXTRAL"

    @classmethod
    def from_config(cls, cfg: Any) -> Mixtral:
        family = FamilyDefaults(qkv_bias=True, o_bias=False, moe=True)
        return cls(ModelArgs.from_config(cfg, family=family, **post_norm_overrides(cfg)))
