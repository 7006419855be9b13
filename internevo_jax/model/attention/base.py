"""What every attention backend provides, and the masking shared by the dense ones.

Inputs of a backend: q [B, T, Hq, D], k and v [B, T, Hkv, D] (Hq a multiple of Hkv: grouped
query attention, query head h reads kv head h // (Hq // Hkv)), and segment_ids [B, T] or None.
Output: [B, T, Hq, D] in q's dtype. Attention is causal and never crosses segments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

# Large but finite: a fully masked row (which causal self-attention cannot produce, but
# padding tricks might) then yields a uniform softmax instead of NaN.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


class AttentionFn(Protocol):
    def __call__(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        segment_ids: jax.Array | None,
        *,
        scale: float,
        precision: Any = None,
    ) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class SupportQuery:
    """The facts a backend's support check may look at."""

    platform: str
    dtype: Any
    head_dim: int
    has_segments: bool
    num_heads: int | None = None
    num_kv_heads: int | None = None
    seq_len: int | None = None


@dataclasses.dataclass(frozen=True)
class AttentionBackend:
    """One attention implementation and the explicit check of where it works."""

    name: str
    supports: Callable[[SupportQuery], tuple[bool, str]]
    fn: AttentionFn
    description: str


def same_segment_mask(segment_ids: jax.Array) -> jax.Array:
    """Boolean [B, T, T] mask: True where query and key tokens share a segment id."""
    return segment_ids[:, :, None] == segment_ids[:, None, :]


def causal_segment_mask(segment_ids: jax.Array | None, q_len: int, kv_len: int) -> jax.Array:
    """Boolean [B or 1, T, S] mask: key s visible to query t iff s <= t and same segment."""
    causal = jnp.arange(kv_len)[None, :] <= jnp.arange(q_len)[:, None]
    if segment_ids is None:
        return causal[None]
    return jnp.logical_and(causal[None], same_segment_mask(segment_ids))
