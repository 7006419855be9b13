"""Reference attention in plain jnp: works everywhere, materialises [B, H, T, T] scores."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from internevo_jax.model.attention.base import (
    MASK_VALUE,
    AttentionBackend,
    SupportQuery,
    causal_segment_mask,
    check_sliding_window,
)


def xla_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    *,
    scale: float,
    precision: Any = None,
    sliding_window: int | None = None,
) -> jax.Array:
    """Causal, segment-masked softmax attention with grouped kv heads; softmax in fp32."""
    check_sliding_window(sliding_window)
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    groups = hq // hkv
    # Group query heads under their kv head instead of repeating k/v: no copy of k/v.
    qg = q.reshape(b, t, hkv, groups, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, precision=precision, preferred_element_type=jnp.float32)
    scores = scores * jnp.float32(scale)
    mask = causal_segment_mask(segment_ids, t, s, sliding_window)[:, None, None, :, :]
    scores = jnp.where(mask, scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, precision=precision)
    return out.reshape(b, t, hq, d)


def _supports(query: SupportQuery) -> tuple[bool, str]:
    return True, "plain XLA ops run on every platform and dtype"


BACKEND = AttentionBackend(
    name="xla",
    supports=_supports,
    fn=xla_attention,
    description="einsum + fp32 softmax with a dense causal/segment mask (O(T^2) memory)",
)
