"""The token loop: prefill the prompts, then one token per step, on device until every row ends.

Two ways to get the next logits share the loop: the KV cache (prefill once, then one token per
step through model/kv_cache.py) and full recompute (the whole fixed-size buffer through the model
at every step: the reference the cache must agree with, and the baseline of the benchmark). Both
give each row the logits of a full forward over that row so far.

Rows are right-padded prompts of different lengths; row b stops after `budgets[b]` new tokens or
at an eos id (which is kept), and is then filled with the pad id.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internevo_jax.generation.sampling import Sampling, choose
from internevo_jax.model.kv_cache import CACHE
from internevo_jax.model.params import abstract_params, in_layout_of

# Prompt and output lengths are rounded up to this, so that batches of similar size share one
# compilation.
LENGTH_MULTIPLE = 16


def round_up(n: int, multiple: int = LENGTH_MULTIPLE) -> int:
    return multiple * max(1, -(-n // multiple))


def decode_model(model: nn.Module, params: dict) -> tuple[nn.Module, dict]:
    """`model` with unrolled, non-rematerialised layers (the cache lives per layer, and nothing is
    differentiated), and `params` in that layout."""
    args = dataclasses.replace(
        model.args, scan_layers=False, checkpoint_layers=0, fixed_window_len=0, pipeline_chunk=False
    )
    if args == model.args:
        return model, params
    plain = model.clone(args=args)
    return plain, in_layout_of(params, abstract_params(plain))


def _last(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [B, T, ...] at index [B] -> [B, 1, ...]."""
    return jnp.take_along_axis(x, index[:, None, None], axis=1)


def _logits(model: nn.Module, params: dict, hidden: jax.Array) -> jax.Array:
    return model.apply({"params": params}, hidden, method="logits")[:, 0]


def _put(buffer: jax.Array, tokens: jax.Array, pos: jax.Array) -> jax.Array:
    """buffer [B, L] with tokens [B] at pos [B] (positions past the end are dropped)."""
    return buffer.at[jnp.arange(buffer.shape[0]), pos].set(tokens, mode="drop")


def _recomputed(model, params, buffer: jax.Array, last: jax.Array) -> jax.Array:
    """Logits [B, V] at `last` [B] of one forward over the whole buffer [B, L]."""
    index = jnp.arange(buffer.shape[1], dtype=jnp.int32)[None]
    # Positions past a row's end are 0 so that dynamic NTK RoPE sees the row's true length;
    # causal attention keeps those tokens out of the logits read here.
    positions = jnp.where(index <= last[:, None], index, 0)
    hidden = model.apply({"params": params}, buffer, positions, None, method="hidden")
    return _logits(model, params, _last(hidden, last))


def recompute_strategy(model, params, ids, lengths, length):
    """(first logits [B, V], buffer, step) rerunning the model over a [B, length] buffer every step."""
    buffer = jnp.zeros((ids.shape[0], length), jnp.int32).at[:, : ids.shape[1]].set(ids)

    def step(buffer, tokens, pos):
        buffer = _put(buffer, tokens, pos)
        return _recomputed(model, params, buffer, pos), buffer

    return _recomputed(model, params, buffer, lengths - 1), buffer, step


def cache_strategy(model, params, ids, lengths, length):
    """(first logits [B, V], cache, step) with a KV cache of `length` slots per row.

    With dynamic NTK RoPE, steps after a row passes max_position_embeddings rerun the model over
    the whole sequence (model/kv_cache.py says why the cache cannot serve them).
    """
    b, p = ids.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    segments = (positions < lengths[:, None]).astype(jnp.int32)  # 0 marks the right padding

    def run(cache, tokens, pos, seg):
        variables = {"params": params} if cache is None else {"params": params, CACHE: cache}
        return model.apply(variables, tokens, pos, seg, method="hidden", mutable=[CACHE])

    # The first call sizes each layer's cache; only the shapes are needed from it.
    full = jnp.zeros((b, length), jnp.int32)
    shapes = jax.eval_shape(run, None, full, jnp.zeros_like(full), jnp.ones_like(full))[1][CACHE]
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    hidden, variables = run(cache, ids, positions, segments)
    first = _logits(model, params, _last(hidden, lengths - 1))

    def cached_step(cache, tokens, pos):
        hidden, variables = run(cache, tokens[:, None], pos[:, None], None)
        return _logits(model, params, hidden), variables[CACHE]

    if not model.args.dynamic_ntk:
        return first, variables[CACHE], cached_step
    limit = model.args.max_position_embeddings

    def step(carry, tokens, pos):
        cache, buffer = carry
        buffer = _put(buffer, tokens, pos)
        logits, cache = jax.lax.cond(
            jnp.any(pos >= limit),  # a row longer than limit: its base grew
            lambda: (_recomputed(model, params, buffer, pos), cache),
            lambda: cached_step(cache, tokens, pos),
        )
        return logits, (cache, buffer)

    buffer = jnp.zeros((b, length), jnp.int32).at[:, :p].set(ids)
    return first, (variables[CACHE], buffer), step


STRATEGIES: dict[str, Callable] = {"cache": cache_strategy, "recompute": recompute_strategy}


@functools.partial(jax.jit, static_argnames=("model", "sampling", "steps", "strategy"))
def generate_padded(
    model: nn.Module,
    params: dict,
    ids: jax.Array,
    lengths: jax.Array,
    budgets: jax.Array,
    key: jax.Array,
    eos_ids: jax.Array,
    pad_id: jax.Array,
    *,
    sampling: Sampling,
    steps: int,
    strategy: str = "cache",
) -> tuple[jax.Array, jax.Array]:
    """New tokens [B, steps] (`pad_id` after a row's end) and their counts [B] for right-padded
    prompts ids [B, P] of `lengths` [B], at most `budgets` [B] <= steps new tokens per row, a row
    ending at any of `eos_ids` [E] (ids < 0 are no eos)."""
    b, p = ids.shape
    first, carry, step = STRATEGIES[strategy](model, params, ids, lengths, p + steps)
    vocab = first.shape[-1]
    track = sampling.repetition_penalty != 1.0
    seen = None
    if track:
        in_prompt = jnp.arange(p)[None] < lengths[:, None]
        seen = jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], ids].max(in_prompt)
    rows = jnp.arange(b)

    def emit(i, logits, key, seen, out, count, done):
        """Choose token i of every row, store it, update the stop flags."""
        tok = choose(logits, key, sampling, seen=seen, cur_len=lengths + i, eos_ids=eos_ids)
        live = jnp.logical_not(done)
        out = out.at[:, i].set(jnp.where(live, tok, pad_id))
        count = count + live
        if seen is not None:
            seen = seen.at[rows, tok].max(live)
        done = done | jnp.isin(tok, eos_ids) | (count >= budgets)
        return tok, seen, out, count, done

    def split(key):
        # greedy decoding draws nothing: no random numbers in its loop
        return jax.random.split(key) if sampling.do_sample else (key, key)

    key, sub = split(key)
    out = jnp.full((b, steps), pad_id, jnp.int32)
    done = budgets <= 0
    tok, seen, out, count, done = emit(0, first, sub, seen, out, jnp.zeros(b, jnp.int32), done)

    def cond(state):
        i, done = state[0], state[-1]
        return jnp.logical_and(i < steps, jnp.logical_not(jnp.all(done)))

    def body(state):
        i, carry, tok, key, seen, out, count, done = state
        logits, carry = step(carry, tok, lengths + i - 1)
        key, sub = split(key)
        tok, seen, out, count, done = emit(i, logits, sub, seen, out, count, done)
        return i + 1, carry, tok, key, seen, out, count, done

    state = (jnp.int32(1), carry, tok, key, seen, out, count, done)
    state = jax.lax.while_loop(cond, body, state)
    return state[5], state[6]


def generate_ids(
    model: nn.Module,
    params: dict,
    prompts: Sequence[Sequence[int]],
    budgets: Sequence[int],
    sampling: Sampling,
    *,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    batch_size: int | None = None,
    seed: int = 0,
    strategy: str = "cache",
) -> list[list[int]]:
    """The new tokens of every prompt (an eos that ended a row is kept), `batch_size` prompts at a
    time (default: all). Every batch has the same shape, so one compilation serves them all."""
    if len(prompts) != len(budgets):
        raise ValueError(f"{len(prompts)} prompts but {len(budgets)} budgets")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt is empty: give at least one token")
    if not prompts:
        return []
    model, params = decode_model(model, params)
    rows = min(batch_size or len(prompts), len(prompts))
    width = round_up(max(len(p) for p in prompts))
    steps = round_up(max(max(budgets), 1))
    key = jax.random.key(seed)
    eos = jnp.asarray(list(eos_ids) or [-1], jnp.int32)  # one placeholder keeps the shape
    results: list[list[int]] = []
    for start in range(0, len(prompts), rows):
        chunk, chunk_budgets = prompts[start : start + rows], budgets[start : start + rows]
        ids = np.zeros((rows, width), np.int32)
        lengths = np.ones(rows, np.int32)  # filler rows: one token, no budget
        room = np.zeros(rows, np.int32)
        for r, (prompt, budget) in enumerate(zip(chunk, chunk_budgets, strict=True)):
            ids[r, : len(prompt)] = prompt
            lengths[r], room[r] = len(prompt), budget
        key, sub = jax.random.split(key)
        out, count = generate_padded(
            model,
            params,
            jnp.asarray(ids),
            jnp.asarray(lengths),
            jnp.asarray(room),
            sub,
            eos,
            jnp.int32(pad_id),
            sampling=sampling,
            steps=steps,
            strategy=strategy,
        )
        out, count = np.asarray(out), np.asarray(count)
        results.extend(out[r, : count[r]].tolist() for r in range(len(chunk)))
    return results


def strip_eos(tokens: list[int], eos_ids: Sequence[int]) -> list[int]:
    """`tokens` without the eos id that ended them."""
    return tokens[:-1] if tokens and tokens[-1] in set(eos_ids) else tokens
