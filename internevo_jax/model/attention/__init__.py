"""Attention backends (ordered, each with an explicit support check) and their dispatcher."""

from internevo_jax.model.attention.base import (
    MASK_VALUE,
    AttentionBackend,
    SupportQuery,
    causal_segment_mask,
    same_segment_mask,
)
from internevo_jax.model.attention.cudnn import dpa_attention
from internevo_jax.model.attention.dispatch import (
    BACKENDS,
    Choice,
    attention_backend_name,
    attention_choice,
    backend_names,
    choice_for_args,
    detect_platform,
    get_backend,
    select_attention_backend,
)
from internevo_jax.model.attention.splash import splash_attention
from internevo_jax.model.attention.xla import xla_attention

__all__ = [
    "BACKENDS",
    "MASK_VALUE",
    "AttentionBackend",
    "Choice",
    "SupportQuery",
    "attention_backend_name",
    "attention_choice",
    "backend_names",
    "causal_segment_mask",
    "choice_for_args",
    "detect_platform",
    "dpa_attention",
    "get_backend",
    "same_segment_mask",
    "select_attention_backend",
    "splash_attention",
    "xla_attention",
]
