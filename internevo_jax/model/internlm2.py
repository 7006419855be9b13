"""InternLM2 (model_type "INTERNLM2", InternEvo's "INTERNLM2_PUBLIC").

Grouped-query attention with one fused `wqkv` projection laid out per kv group (the group's
query heads, then its key head, then its value head: InternEvo's and HF InternLM2's layout),
no biases in the released models (`no_bias=True`), rope_base from the config (1e6 for 7B),
InternEvo's 0.02 init. `apply_post_layer_norm=True` gives post-norm blocks and, as in InternEvo,
no final norm.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import INTERNEVO_02_INIT, ModelArgs
from internevo_jax.model.causal_lm import CausalLM, qk_interleaved_note
from internevo_jax.model.registry import register_model


@register_model("INTERNLM2")
class InternLM2(CausalLM):
    """InternLM2: fused grouped wqkv, wo, SwiGLU MLP, RoPE, untied head (see CausalLM)."""

    family = "INTERNLM2"

    @classmethod
    def from_config(cls, cfg: Any) -> InternLM2:
        post = bool(cfg.model.apply_post_layer_norm)
        args = ModelArgs.from_config(
            cfg, init=INTERNEVO_02_INIT, fused_qkv=True, post_norm=post, final_norm=not post
        )
        return cls(args)

    @staticmethod
    def notes(cfg: Any) -> list[str]:
        return qk_interleaved_note(cfg, "INTERNLM2")


# InternEvo registers the model under this name; its configs use it.
register_model("INTERNLM2_PUBLIC", InternLM2)
