"""InternLM1 (model_type "INTERNLM"): embedding -> pre-norm decoder blocks -> norm -> head."""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.causal_lm import CausalLM
from internevo_jax.model.registry import register_model

__all__ = ["InternLM"]


@register_model("INTERNLM")
class InternLM(CausalLM):
    """InternLM1: q/k/v/o with bias, SwiGLU MLP, RoPE, untied head (see CausalLM for the call)."""

    @classmethod
    def from_config(cls, cfg: Any) -> InternLM:
        # InternEvo's INTERNLM builder accepts apply_post_layer_norm but never uses it: the
        # model is always pre-norm, so checkpoints trained with either value load the same.
        return cls(ModelArgs.from_config(cfg, post_norm=False))

    @staticmethod
    def notes(cfg: Any) -> list[str]:
        """Settings of `cfg` that are accepted but have no effect on this model (for the log)."""
        m = cfg.model
        out = []
        if m.apply_post_layer_norm:
            out.append(
                "model.apply_post_layer_norm=True has no effect for INTERNLM: InternEvo's INTERNLM "
                "model is always pre-norm (InternLM2 honours it)"
            )
        return out
