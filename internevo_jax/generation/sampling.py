"""Choosing the next token from logits: InternEvo's processors, in InternEvo's order.

repetition penalty -> length penalty -> (sampling only) temperature -> top-k -> top-p -> draw;
greedy decoding takes the argmax after the two penalties. Everything works on fp32 [B, V] logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How tokens are chosen (hashable: the compiled loop is specialised on it; the eos and pad
    ids are data, passed apart). top_k 0 and top_p 1.0 switch those filters off;
    repetition_penalty and length_penalty 1.0 too."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0


def penalize_repeats(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """HF / InternEvo repetition penalty: for tokens already in the row (`seen` [B, V] bool),
    positive logits are divided by `penalty` and negative ones multiplied by it."""
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalized, logits)


def penalize_length(logits: jax.Array, eos_mask: jax.Array, cur_len: jax.Array, penalty: float) -> jax.Array:
    """InternEvo's length penalty outside beam search: every logit but the eos ones is divided by
    cur_len ** penalty, cur_len [B] being the row's length so far (prompt + output)."""
    scale = cur_len.astype(jnp.float32)[:, None] ** penalty
    return jnp.where(eos_mask[None, :], logits, logits / scale)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Logits below the k-th largest of their row set to -inf (ties with it are kept)."""
    k = min(k, logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keep the smallest set of most probable tokens whose mass reaches `p`
    (at least one token); the others become -inf."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < p  # mass before the token is below p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def choose(
    logits: jax.Array,
    key: jax.Array,
    s: Sampling,
    *,
    seen: jax.Array | None = None,
    cur_len: jax.Array | None = None,
    eos_ids: jax.Array | None = None,
) -> jax.Array:
    """The next token [B] int32 for logits [B, V] under `s`; `seen` [B, V] (tokens already in
    each row) for the repetition penalty; `cur_len` [B] and `eos_ids` [E] for the length penalty
    (which, as in InternEvo, needs eos ids)."""
    logits = logits.astype(jnp.float32)
    if s.repetition_penalty != 1.0 and seen is not None:
        logits = penalize_repeats(logits, seen, s.repetition_penalty)
    if s.length_penalty != 1.0 and eos_ids is not None and cur_len is not None:
        vocab = logits.shape[-1]
        # ids < 0 stand for "no eos": they select nothing, and without eos ids there is no penalty
        eos_mask = jnp.zeros(vocab, bool).at[jnp.where(eos_ids >= 0, eos_ids, vocab)].set(True, mode="drop")
        penalized = penalize_length(logits, eos_mask, cur_len, s.length_penalty)
        logits = jnp.where(jnp.any(eos_mask), penalized, logits)
    if not s.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / s.temperature
    if s.top_k > 0:
        logits = top_k_filter(logits, s.top_k)
    if s.top_p < 1.0:
        logits = top_p_filter(logits, s.top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
