"""Gemma (model_type "GEMMA"): InternEvo's modeling_gemma.py.

LLaMA's decoder with: head_dim given apart from hidden / heads (256 for 7B: 16 heads of 256 on a
3072 hidden), RMSNorm scaling by (1 + w) (`add_unit_offset=True` in its config), a GeGLU MLP
(`use_swiglu=False`), the embedding output multiplied by sqrt(hidden), and the output head tied
to the embedding table. InternEvo's 0.02 init.

Two choices follow Hugging Face's Gemma (the released weights' own definition) where InternEvo
differs, so that HF checkpoints give their own logits: the GeGLU uses tanh-approximate gelu
(InternEvo's gated MLP uses exact gelu), and the head is tied (InternEvo copies the embedding into
a separate head when loading HF weights). `model.tie_word_embeddings=False` gives InternEvo's
untied head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from internevo_jax.model.args import INTERNEVO_02_INIT, FamilyDefaults, ModelArgs
from internevo_jax.model.causal_lm import CausalLM
from internevo_jax.model.registry import register_model
from internevo_jax.names import GELU, GELU_TANH


@register_model("GEMMA")
class Gemma(CausalLM):
    """Gemma: embedding * sqrt(hidden), (1 + w) RMSNorm, GeGLU, tied head (see CausalLM)."""

    family = "GEMMA"

    @classmethod
    def from_config(cls, cfg: Any) -> CausalLM:
        args = ModelArgs.from_config(
            cfg, init=INTERNEVO_02_INIT, family=FamilyDefaults(tie_embeddings=True), embed_scale=True
        )
        if args.mlp_activation == GELU:
            args = dataclasses.replace(args, mlp_activation=GELU_TANH)
        return cls(args)
