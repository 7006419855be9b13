"""What every attention backend provides, and the masking shared by the dense ones.

Inputs of a backend: q [B, T, Hq, D], k and v [B, T, Hkv, D] (Hq a multiple of Hkv: grouped
query attention, query head h reads kv head h // (Hq // Hkv)), and segment_ids [B, T] or None.
Output: [B, T, Hq, D] in q's dtype. Attention is causal and never crosses segments: key s is
visible to query t iff s <= t, segment_ids[s] == segment_ids[t] and, with a sliding window w,
t - s < w (the window counts the query itself, as HF's Qwen2 / Mistral masks do).
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
        sliding_window: int | None = None,
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
    sliding_window: int | None = None
    vmapped: bool = False  # called under the pipeline's stage vmap


Check = Callable[[SupportQuery], tuple[bool, str]]


@dataclasses.dataclass(frozen=True)
class AttentionBackend:
    """One attention implementation and the explicit check of where it works.

    `supports(query)` says whether the backend can run a case, and why (or why not).
    `auto_supports(query)`, when given, is the stricter check "auto" uses: a backend may be able to
    run a case (explicitly requested) without being the right automatic choice for it, e.g. a GPU
    kernel interpreted on CPU. `make(query)` returns the function to call for that case (defaults
    to `fn`), e.g. with interpret mode switched on for CPU.
    """

    name: str
    supports: Check
    fn: AttentionFn
    description: str
    auto_supports: Check | None = None
    make: Callable[[SupportQuery], AttentionFn] | None = None

    def check_auto(self, query: SupportQuery) -> tuple[bool, str]:
        """The check "auto" uses (the plain support check unless the backend is stricter)."""
        ok, reason = self.supports(query)
        if ok and self.auto_supports is not None:
            return self.auto_supports(query)
        return ok, reason

    def function_for(self, query: SupportQuery) -> AttentionFn:
        """The function that runs `query`'s case."""
        return self.fn if self.make is None else self.make(query)


def same_segment_mask(segment_ids: jax.Array) -> jax.Array:
    """Boolean [B, T, T] mask: True where query and key tokens share a segment id."""
    return segment_ids[:, :, None] == segment_ids[:, None, :]


def causal_segment_mask(
    segment_ids: jax.Array | None, q_len: int, kv_len: int, sliding_window: int | None = None
) -> jax.Array:
    """Boolean [B or 1, T, S] mask: key s visible to query t iff s <= t (and t - s < window) and
    both lie in the same segment."""
    rows, cols = jnp.arange(q_len)[:, None], jnp.arange(kv_len)[None, :]
    visible = cols <= rows
    if sliding_window is not None:
        visible = jnp.logical_and(visible, rows - cols < sliding_window)
    if segment_ids is None:
        return visible[None]
    return jnp.logical_and(visible[None], same_segment_mask(segment_ids))


def check_sliding_window(sliding_window: int | None) -> None:
    """ValueError unless the window is None or a positive int."""
    if sliding_window is not None and (not isinstance(sliding_window, int) or sliding_window <= 0):
        raise ValueError(f"sliding_window must be a positive int or None (got {sliding_window!r})")
