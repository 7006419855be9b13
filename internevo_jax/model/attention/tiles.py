"""Which (query block, key block) tiles of a packed row hold any visible pair.

A packed row's attention matrix is causal and block-diagonal by segment (plus a band, with a
sliding window), so most of its tiles are fully masked. A flash kernel that loops only over the
tiles computed here does only the work inside the segments. The ranges are computed once per
call in plain XLA (O(T log T)), passed to the kernels as inputs, and are the same numbers the
tile report below counts.

For query t the visible keys lie in [first_visible(t), t]: first_visible(t) is the first token of
t's segment id (its first occurrence in the row, so non-contiguous ids are still exact), raised to
t - window + 1 with a sliding window. For key s the queries that see it lie in
[s, last_visible(s)]: the last occurrence of s's id, lowered to s + window - 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def _first_and_last_occurrence(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For each position of a [T] row: the first and last index holding the same id."""
    t = segment_ids.shape[0]
    order = jnp.argsort(segment_ids, stable=True)
    ids = segment_ids[order]
    idx = jnp.arange(t)
    starts = jnp.concatenate([jnp.ones((1,), bool), ids[1:] != ids[:-1]])
    ends = jnp.concatenate([ids[1:] != ids[:-1], jnp.ones((1,), bool)])
    # index (in sorted order) of the first / last member of each position's group
    group_first = jax.lax.cummax(jnp.where(starts, idx, 0))
    group_last = jax.lax.cummin(jnp.where(ends, idx, t - 1), reverse=True)
    first = jnp.zeros((t,), jnp.int32).at[order].set(order[group_first].astype(jnp.int32))
    last = jnp.zeros((t,), jnp.int32).at[order].set(order[group_last].astype(jnp.int32))
    return first, last


@dataclasses.dataclass(frozen=True)
class TileRanges:
    """Per row, per block: the half-open range of blocks a kernel loops over.

    kv_lo / kv_hi [B, T // block_q]: key blocks a query block visits (forward, dq).
    q_lo / q_hi [B, T // block_k]: query blocks a key block visits (dk, dv).
    """

    kv_lo: jax.Array
    kv_hi: jax.Array
    q_lo: jax.Array
    q_hi: jax.Array


def tile_ranges(
    segment_ids: jax.Array, block_q: int, block_k: int, sliding_window: int | None = None
) -> TileRanges:
    """The tile ranges of rows `segment_ids` [B, T] (T a multiple of both block sizes)."""
    _, t = segment_ids.shape
    if t % block_q or t % block_k:
        raise ValueError(f"row length {t} must be a multiple of block_q={block_q} and block_k={block_k}")
    pos = jnp.arange(t, dtype=jnp.int32)

    def one_row(seg):
        first, last = _first_and_last_occurrence(seg)
        if sliding_window is not None:
            first = jnp.maximum(first, pos - sliding_window + 1)
            last = jnp.minimum(last, pos + sliding_window - 1)
        q_first = first.reshape(-1, block_q).min(axis=1)  # earliest key any query in the block sees
        q_end = pos.reshape(-1, block_q)[:, -1]  # causal: no key past the block's last query
        kv_lo = q_first // block_k
        kv_hi = q_end // block_k + 1
        k_last = last.reshape(-1, block_k).max(axis=1)  # latest query that sees a key of the block
        k_start = pos.reshape(-1, block_k)[:, 0]
        q_lo = k_start // block_q
        q_hi = k_last // block_q + 1
        return kv_lo, kv_hi, q_lo, q_hi

    return TileRanges(*(r.astype(jnp.int32) for r in jax.vmap(one_row)(segment_ids)))


def visited_tiles(
    segment_ids, block_q: int, block_k: int, sliding_window: int | None = None
) -> dict[str, int]:
    """How many tiles each pass runs per (row, head), summed over the rows of `segment_ids`.

    "forward" and "dq" loop key blocks per query block; "dkdv" loops query blocks per key block.
    "dense" is what a causal kernel without segment skipping runs.
    """
    seg = jnp.asarray(segment_ids, jnp.int32)
    r = tile_ranges(seg, block_q, block_k, sliding_window)
    forward = int(np.sum(np.asarray(r.kv_hi - r.kv_lo)))
    dkdv = int(np.sum(np.asarray(r.q_hi - r.q_lo)))
    causal = tile_ranges(jnp.zeros_like(seg), block_q, block_k)
    return {
        "forward": forward,
        "dq": forward,
        "dkdv": dkdv,
        "dense": int(np.sum(np.asarray(causal.kv_hi - causal.kv_lo))),
    }
