"""LLaMA2 (model_type "LLAMA2", alias "LLAMA"): InternEvo's modeling_llama.py.

Separate wq/wk/wv/wo (grouped kv heads), no biases in the released models (`no_bias=True`),
SwiGLU MLP, RMSNorm, RoPE, untied head, InternEvo's 0.02 init. `apply_post_layer_norm=True`
gives post-norm blocks and no final norm, as in InternEvo. InternEvo's LLaMA2 never hands
`use_dynamic_ntk_rope` to its attention, so the setting has no effect here either.
"""

from __future__ import annotations

from typing import Any

from internevo_jax.model.args import INTERNEVO_02_INIT, ModelArgs
from internevo_jax.model.causal_lm import CausalLM, post_norm_overrides
from internevo_jax.model.registry import register_model


@register_model("LLAMA2")
class Llama2(CausalLM):
    """LLaMA2: wq/wk/wv/wo, SwiGLU MLP, RoPE, untied head (see CausalLM)."""

    family = "LLAMA2"

    @classmethod
    def from_config(cls, cfg: Any) -> Llama2:
        return cls(
            ModelArgs.from_config(cfg, init=INTERNEVO_02_INIT, dynamic_ntk=False, **post_norm_overrides(cfg))
        )

    @staticmethod
    def notes(cfg: Any) -> list[str]:
        out = []
        if cfg.model.use_dynamic_ntk_rope:
            out.append(
                "model.use_dynamic_ntk_rope=True has no effect for LLAMA2: InternEvo's LLaMA2 always uses "
                "plain RoPE (INTERNLM and INTERNLM2 honour it)"
            )
        return out


# InternEvo's configs (70B_sft_llama2.py) name the same model "LLAMA".
register_model("LLAMA", Llama2)
