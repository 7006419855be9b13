"""Which experts each token goes to, with what weight, and the load-balancing loss terms.

Tokens are routed in groups: one group is one row of the batch (one data-parallel rank's
packed micro-batch, the tokens InternEvo's gate sees at once), so capacities and losses do not
depend on how the rows are spread over devices. Everything here is [rows, T, ...] and in fp32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from internevo_jax.model.moe.settings import GSHARD, MoEArgs

EPS = float(jnp.finfo(jnp.float32).eps)


@dataclasses.dataclass(frozen=True)
class Routing:
    """expert_ids [R, T, k] int32; weights [R, T, k] (0 for a dropped choice); kept [R, T, k] bool;
    layer_aux [R] (this layer's load-balancing loss per row); counts [R, E] (top-k choices per
    expert, HF's global loss); score_sums [R, E] (softmax scores summed over tokens); load [R, E]
    (fraction of the row's choices each expert was picked for, before dropping); tokens [R] (the
    row's tokens that count in HF's loss: padding is left out)."""

    expert_ids: jax.Array
    weights: jax.Array
    kept: jax.Array
    layer_aux: jax.Array
    counts: jax.Array
    score_sums: jax.Array
    load: jax.Array
    tokens: jax.Array


jax.tree_util.register_dataclass(
    Routing,
    data_fields=["expert_ids", "weights", "kept", "layer_aux", "counts", "score_sums", "load", "tokens"],
    meta_fields=[],
)


def route(logits: jax.Array, moe: MoEArgs, valid: jax.Array | None = None) -> Routing:
    """Route router logits [R, T, E] as `moe.routing` says. `valid` [R, T] marks the tokens that
    count in HF's loss over all layers (not padding); None: all."""
    logits = logits.astype(jnp.float32)
    ids, weights, kept, layer_aux, load = (_gshard if moe.routing == GSHARD else _dropless)(logits, moe)
    valid = (jnp.ones(logits.shape[:2]) if valid is None else valid).astype(jnp.float32)
    counts, score_sums = _softmax_terms(logits, moe, valid)
    return Routing(ids.astype(jnp.int32), weights, kept, layer_aux, counts, score_sums, load, valid.sum(-1))


def _choice_counts(expert_ids: jax.Array, num_experts: int) -> jax.Array:
    """[R, T, k] -> [R, E]: how many of the row's choices picked each expert."""
    return jax.nn.one_hot(expert_ids, num_experts, dtype=jnp.float32).sum(axis=(1, 2))


def _softmax_terms(logits: jax.Array, moe: MoEArgs, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(counts [R, E], score sums [R, E]) over the valid tokens of softmax top-k: the terms of HF's
    loss over all layers (InternEvo's Qwen3-MoE applies softmax there whatever its scoring function)."""
    probs = jax.nn.softmax(logits, axis=-1) * valid[..., None]
    _, ids = jax.lax.top_k(probs, moe.top_k)
    onehot = jax.nn.one_hot(ids, moe.num_experts, dtype=jnp.float32) * valid[..., None, None]
    return onehot.sum(axis=(1, 2)), probs.sum(axis=1)


def _gshard(logits: jax.Array, moe: MoEArgs):
    """(expert ids, weights, kept, layer loss, load) of InternEvo's GShard layer (its fused top-k gating, the default for every k).

    Softmax scores, top-k experts. Each expert has `moe.capacity(T)` slots per row, filled by all
    first choices in token order, then all second choices, ...; a choice past the capacity is
    dropped. The kept choices' scores are renormalised to sum to 1 (a token whose choices are all
    dropped gets no expert output: the residual stream carries it). The loss is
    E * sum_e(mean score_e * fraction of first choices on e).
    """
    rows, tokens, experts = logits.shape
    k = moe.top_k
    gates = jax.nn.softmax(logits, axis=-1)
    top, ids = jax.lax.top_k(gates, k)  # [R, T, k]
    capacity = moe.capacity(tokens)
    if capacity is None:
        kept = jnp.ones(ids.shape, bool)
    else:
        # choice-major order: [R, k, T] flattened, position = running count per expert
        onehot = jax.nn.one_hot(jnp.swapaxes(ids, 1, 2).reshape(rows, k * tokens), experts, dtype=jnp.int32)
        position = (jnp.cumsum(onehot, axis=1) - 1) * onehot
        position = position.sum(-1).reshape(rows, k, tokens)
        kept = jnp.swapaxes(position < capacity, 1, 2)
    kept_scores = jnp.where(kept, top, 0.0)
    weights = kept_scores / jnp.maximum(kept_scores.sum(-1, keepdims=True), EPS)
    first = jax.nn.one_hot(ids[..., 0], experts, dtype=jnp.float32)
    layer_aux = experts * (gates.mean(axis=1) * first.mean(axis=1)).sum(-1)
    return ids, weights, kept, layer_aux, _choice_counts(ids, experts) / (tokens * k)


def _dropless(logits: jax.Array, moe: MoEArgs):
    """(expert ids, weights, kept, layer loss, load) of InternEvo's Dropless layer: softmax or sigmoid scores, top-k, weights optionally divided by
    their sum, then times routed_scaling_factor; nothing dropped. The per-layer loss is
    E / (T * k) * sum_e(count_e * mean score_e), counts over all k choices."""
    _, tokens, experts = logits.shape
    k = moe.top_k
    scores = jax.nn.sigmoid(logits) if moe.scoring_func == "sigmoid" else jax.nn.softmax(logits, axis=-1)
    top, ids = jax.lax.top_k(scores, k)
    if moe.normalize_weights:
        top = top / jnp.maximum(top.sum(-1, keepdims=True), EPS)
    weights = top * moe.routed_scaling_factor
    choice_counts = _choice_counts(ids, experts)
    layer_aux = experts / (tokens * k) * (choice_counts * scores.mean(axis=1)).sum(-1)
    return ids, weights, jnp.ones(ids.shape, bool), layer_aux, choice_counts / (tokens * k)
