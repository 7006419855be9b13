"""Attention with a key/value cache: the decode mode of `Attention` (generation).

A model applied with the "cache" collection mutable runs every attention layer in decode mode:

    hidden, vs = model.apply({"params": p, "cache": c}, ids, positions, segment_ids,
                             method="hidden", mutable=["cache"])

Each layer keeps `key` and `value` [B, Hkv, S, D]; token t of row b is stored in slot positions[b, t]
(segment id 0 marks padding, whose keys are never stored). A call with several tokens per row is a
prefill: rows start at position 0 with right padding, and attention runs over the call's own tokens
with the model's backend. A call with one token per row is a decode step: the query attends to the
cache slots up to its position. Training and `init` never make the collection mutable, so their
path is untouched. Layers must be unrolled (`scan_layers=False`): the scan carries no cache.

Dynamic NTK RoPE: the base is constant while a row is within max_position_embeddings, so decode
steps there are exact. Past it the base grows with the length, and a full forward over the longer
sequence changes every earlier token's hidden states, which no cache holds; a decode step there
rotates the new query and key with the new base and keeps the cached keys as they are (InternEvo's
and HF's cached decoding). generation/loop.py reruns the model instead, to stay exact.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.attention import MASK_VALUE, choice_for_args
from internevo_jax.model.layers import apply_rotary, rope_tables, softmax_scale

CACHE = "cache"  # the flax collection holding every layer's keys and values


def is_decoding(module: nn.Module) -> bool:
    """True when `module` runs in decode mode (the cache collection is mutable, outside init)."""
    return module.is_mutable_collection(CACHE) and not module.is_initializing()


def write_slots(cache: jax.Array, new: jax.Array, slots: jax.Array) -> jax.Array:
    """cache [B, H, S, D] with new [B, T, H, D] stored at slots [B, T]; slots >= S are dropped."""
    rows = jnp.arange(cache.shape[0])[:, None]
    # the two index arrays around the slice put their [B, T] axes first: new's own layout
    return cache.at[rows, :, slots].set(new.astype(cache.dtype), mode="drop")


def attend_cache(
    args: ModelArgs, q: jax.Array, keys: jax.Array, values: jax.Array, positions: jax.Array
) -> jax.Array:
    """One query per row, q [B, 1, Hq, D] at `positions` [B, 1], over the cached keys/values
    [B, Hkv, S, D]: slot s is visible iff s <= position (and inside the sliding window). Scores and
    softmax in fp32, as in the xla backend."""
    b, _, hq, d = q.shape
    hkv, s = keys.shape[1], keys.shape[2]
    qg = q[:, 0].reshape(b, hkv, hq // hkv, d)
    scores = jnp.einsum(
        "bkgd,bksd->bkgs", qg, keys, precision=args.precision, preferred_element_type=jnp.float32
    )
    scores = scores * jnp.float32(softmax_scale(args.head_dim))
    slot = jnp.arange(s)[None, :]
    visible = slot <= positions
    if args.sliding_window is not None:
        visible = jnp.logical_and(visible, positions - slot < args.sliding_window)
    scores = jnp.where(visible[:, None, None, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    out = jnp.einsum("bkgs,bksd->bkgd", probs, values, precision=args.precision)
    return out.reshape(b, 1, hq, d)


def attend_prompt(args: ModelArgs, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Causal attention of a right-padded prompt over itself, on the model's backend."""
    choice = choice_for_args(args, seq_len=q.shape[1], has_segments=False)
    return choice.fn(
        q,
        k,
        v,
        None,
        scale=softmax_scale(args.head_dim),
        precision=args.precision,
        sliding_window=args.sliding_window,
    )


def cached_attention(
    module: nn.Module,
    args: ModelArgs,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array | None,
) -> jax.Array:
    """Decode-mode attention of `module` on q [B, T, Hq, D], k, v [B, T, Hkv, D] before RoPE (keys
    are cached after it).

    The cache variables are created on the first call, sized by it (shape discovery with
    jax.eval_shape); later calls pass them in.
    """
    b, t = q.shape[:2]
    valid = jnp.ones((b, t), bool) if segment_ids is None else segment_ids != 0
    # Padding never counts in a row's length (dynamic NTK) and never lands in the cache.
    positions = jnp.where(valid, positions, 0)
    cos, sin = rope_tables(args, positions)
    q = apply_rotary(q, cos, sin, args.qk_interleaved)
    k = apply_rotary(k, cos, sin, args.qk_interleaved)

    # heads before slots: a decode step's attention is then two plain batched matmuls over the cache
    shape = (b, args.num_kv_heads, t, args.head_dim)
    key = module.variable(CACHE, "key", jnp.zeros, shape, k.dtype)
    value = module.variable(CACHE, "value", jnp.zeros, shape, v.dtype)
    slots = jnp.where(valid, positions, key.value.shape[2])
    key.value = write_slots(key.value, k, slots)
    value.value = write_slots(value.value, v, slots)
    if t > 1:
        return attend_prompt(args, q, k, v)
    return attend_cache(args, q, key.value, value.value, positions)
