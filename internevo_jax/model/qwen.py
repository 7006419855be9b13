"""Qwen2 (model_type "QWEN2") and the dense Qwen3 ("QWEN3"): LLaMA's decoder with other options.

QWEN2MOE and QWEN3MOE are the same models with mixture-of-experts MLPs (model/moe/): routed
experts plus, for Qwen2-MoE, shared experts added through a sigmoid gate.

Qwen2 (InternEvo's modeling_qwen2.py): biases on q/k/v but not on o (qkv_bias=True, o_bias=False
unless the config says otherwise), rope_base 1e6 in its configs, and sliding-window attention on
the layers from `max_window_layers` on when `use_sliding_window` is set. Qwen3: no biases, an
RMSNorm over head_dim on every q and k head before RoPE, head_dim given apart from hidden / heads
(the dense half of InternEvo's qwen3_30B_A3B.py). Both use InternEvo's 0.02 init; small Qwen
releases tie the head to the embedding (model.tie_word_embeddings=True).
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import INTERNEVO_02_INIT, FamilyDefaults, ModelArgs
from internevo_jax.model.causal_lm import CausalLM, post_norm_overrides
from internevo_jax.model.registry import register_model


def _build(cls: type[CausalLM], cfg: Any, family: FamilyDefaults) -> CausalLM:
    return cls(ModelArgs.from_config(cfg, init=INTERNEVO_02_INIT, family=family, **post_norm_overrides(cfg)))


@register_model("QWEN2")
class Qwen2(CausalLM):
    """Qwen2: q/k/v with bias, o without, GQA, SwiGLU MLP, RoPE, optional sliding window."""

    family = "QWEN2"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        return _build(cls, cfg, FamilyDefaults(qkv_bias=True, o_bias=False))


@register_model("QWEN3")
class Qwen3(CausalLM):
    """Qwen3 (dense): q/k RMSNorm per head, head_dim from the config, no biases."""

    family = "QWEN3"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        return _build(cls, cfg, FamilyDefaults(qkv_bias=False, o_bias=False, qk_norm=True))


@register_model("QWEN2MOE")
class Qwen2Moe(CausalLM):
    """Qwen2-MoE (InternEvo's modeling_qwen2_moe.py): Qwen2 attention, MoE MLPs with shared experts
    mixed in by sigmoid(Linear(H, 1)(x))."""

    family = "QWEN2MOE"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        return _build(
            cls, cfg, FamilyDefaults(qkv_bias=True, o_bias=False, moe=True, moe_shared_mix="sigmoid")
        )


@register_model("QWEN3MOE")
class Qwen3Moe(CausalLM):
    """Qwen3-MoE (InternEvo's modeling_qwen3_moe.py): Qwen3 attention with q/k norms and head_dim,
    MoE MLPs. InternEvo's builder defaults qkv_bias=True (o_bias False), and its qwen3_30B_A3B.py
    keeps that; HF's Qwen3-MoE has no attention biases (set model.qkv_bias=False for those)."""

    family = "QWEN3MOE"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        fam = FamilyDefaults(qkv_bias=True, o_bias=False, qk_norm=True, moe=True, moe_shared_mix="sigmoid")
        return _build(cls, cfg, fam)
