"""Baichuan2 (model_type "BAICHUAN2"): InternEvo's modeling_baichuan2.py (the 7B, RoPE).

LLaMA's decoder with one fused q/k/v projection holding all of q, then all of k, then all of v
(HF's `W_pack`), no bias on the output projection, and Baichuan2's NormHead: every vocab row of the head weight is
L2-normalised before the projection. InternEvo's 0.02 init.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import INTERNEVO_02_INIT, FamilyDefaults, ModelArgs
from internevo_jax.model.causal_lm import CausalLM
from internevo_jax.model.registry import register_model
from internevo_jax.names import QKV_CONCAT

# InternEvo's Baichuan2: wqkv biased unless no_bias, out_proj never.
BAICHUAN2_DEFAULTS = FamilyDefaults(o_bias=False, qkv_fusion=True, fused_layout=QKV_CONCAT, norm_head=True)


@register_model("BAICHUAN2")
class Baichuan2(CausalLM):
    """Baichuan2: fused [q | k | v] W_pack, SwiGLU MLP, RoPE, normalised untied head."""

    family = "BAICHUAN2"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        return cls(ModelArgs.from_config(cfg, init=INTERNEVO_02_INIT, family=BAICHUAN2_DEFAULTS))
