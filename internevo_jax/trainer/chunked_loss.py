"""The head and the cross-entropy fused, chunked over tokens: fp32 logits [tokens, vocab] are never
materialised, only one chunk of them at a time.

`chunked_cross_entropy(hidden, kernel, labels, ...)` takes the final norm's output and the head
kernel (`CausalLM.head_inputs`) and returns `(loss, stats)`: the value of `loss.cross_entropy`
and the dict of `loss.token_stats` on the logits `hidden @ kernel`. The 1.5B benchmark model
(8 x 4096 tokens, vocab 103168) would otherwise hold 13.5 GB of fp32 logits, and as much again
for their gradient.

It is a `jax.custom_vjp` over (hidden, kernel). Its forward rule walks the chunks once: each
chunk's logits give the logsumexp, the label logit and the argmax, and at once the chunk's
gradient, dz = softmax - (1 - e) * onehot - e / V per valid token, which is turned into the
chunk's d_hidden (dz @ kernel.T) and added to d_kernel (hidden.T @ dz) before the next chunk.
The backward rule only scales those stored gradients by the incoming cotangent. So loss, stats
and gradient cost one logits matmul per chunk (plus the two gradient matmuls), never a second
one: recomputing the logits in the backward pass would add a third to the head's matmul work,
the largest matmul of a small model. The chunks run over tokens, not over the vocabulary,
because a token's gradient needs the logsumexp over its whole vocabulary row: vocabulary chunks
would need a first pass for the logsumexp and a second one for the gradient.
The primal function (no gradient asked, e.g. validation) computes only loss and stats.

Chunks cut the sequence axis of every row; the rows axis stays whole, so its data-parallel
sharding is untouched, and the hidden states are gathered over any sequence sharding first.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.names import ACT_BATCH, ACT_EMBED_DIM, ACT_VOCAB_DIM, CE_CHUNK_SIZE, IGNORE_INDEX
from internevo_jax.trainer.loss import reduce_loss, reduce_stats

_HIDDEN = (ACT_BATCH, None, ACT_EMBED_DIM)  # [rows, chunk, hidden]: no sequence sharding
_LOGITS = (ACT_BATCH, None, ACT_VOCAB_DIM)  # [rows, chunk, vocab]
_ROW_KERNEL = (ACT_BATCH, ACT_EMBED_DIM, ACT_VOCAB_DIM)  # [rows, hidden, vocab]


def chunked_cross_entropy(
    hidden: jax.Array,
    kernel: jax.Array,
    labels: jax.Array,
    type_ids: jax.Array | None = None,
    *,
    num_types: int = 0,
    label_smoothing: float = 0.0,
    chunk_size: int = CE_CHUNK_SIZE,
    precision=None,
) -> tuple[jax.Array, dict]:
    """(loss, stats) of the logits `hidden @ kernel`, chunk by chunk.

    hidden [rows, T, h] and kernel [h, vocab] in the compute dtype (the head's kernel as the model
    uses it, gradient scaling included); labels (and type_ids) [rows, T] int32. The loss is
    `cross_entropy`'s (per-row token mean over labels != -100, then the mean over rows, torch-style
    label smoothing) and `stats` is `token_stats`'s dict (with num_types > 0 the per-type sums as
    well). At most `chunk_size` tokens of each row per chunk: T is cut into
    ceil(T / chunk_size) equal chunks, the last padded with ignored labels; matmuls accumulate in fp32 at `precision`. Differentiable in hidden and kernel.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not num_types:
        type_ids = None
    static = _Static(
        int(num_types), float(label_smoothing), int(chunk_size), precision, jnp.dtype(kernel.dtype)
    )
    return _fused(hidden, kernel, labels, type_ids, static)


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[rows, T, ...] (T a multiple of chunk) -> [T / chunk, rows, chunk, ...], the scan's order."""
    rows, t = x.shape[:2]
    return jnp.swapaxes(x.reshape(rows, t // chunk, chunk, *x.shape[2:]), 0, 1)


def _unchunk(x: jax.Array, length: int) -> jax.Array:
    """[n, rows, chunk, ...] -> [rows, length, ...], the padding cut off."""
    n, rows, chunk = x.shape[:3]
    return jnp.swapaxes(x, 0, 1).reshape(rows, n * chunk, *x.shape[3:])[:, :length]


def _pass(hidden, kernel, labels, type_ids, num_types, smoothing, chunk, precision, with_grad):
    """One pass over the chunks: (loss, stats) and, with_grad, the gradients (d_hidden, d_kernel)
    of the loss, each multiplied by rows * T (see `weight` below)."""
    rows, length, _ = hidden.shape
    vocab = kernel.shape[-1]
    hidden = nn.with_logical_constraint(hidden, _HIDDEN)
    valid = labels != IGNORE_INDEX
    safe = jnp.where(valid, labels, 0)  # ignored labels read class 0 and are masked
    validf = valid.astype(jnp.float32)
    # The per-token weight of the loss is valid / max(count of its row, 1) / rows; the gradient is
    # formed with that weight times rows * T, which keeps a chunk's dz (cast to the compute dtype
    # for the gradient matmuls) near the size of softmax - onehot: an fp16 dz would otherwise
    # underflow long before the loss scale reaches it in the backward rule.
    weight = validf * (length / jnp.maximum(validf.sum(axis=-1, keepdims=True), 1.0))
    # as many chunks as `chunk` asks for, evened out: a row pads fewer than one token per chunk
    count = -(-length // chunk)
    chunk = -(-length // count)
    pad = count * chunk - length
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        safe = jnp.pad(safe, ((0, 0), (0, pad)))
        weight = jnp.pad(weight, ((0, 0), (0, pad)))
    xs = (_chunks(hidden, chunk), _chunks(safe, chunk), _chunks(weight, chunk))
    dot = functools.partial(jnp.einsum, precision=precision, preferred_element_type=jnp.float32)

    def body(d_kernel, x):
        h, y, w = x
        h = nn.with_logical_constraint(h, _HIDDEN)
        z = nn.with_logical_constraint(dot("bcd,dv->bcv", h, kernel), _LOGITS)
        logz = jax.nn.logsumexp(z, axis=-1)
        label_logit = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
        out = {"nll": logz - label_logit, "predicted": jnp.argmax(z, axis=-1)}
        if smoothing > 0:
            out["smooth"] = logz - z.mean(axis=-1)
        if with_grad:
            target = jax.nn.one_hot(y, vocab, dtype=jnp.float32) * (1.0 - smoothing) + smoothing / vocab
            dz = ((jnp.exp(z - logz[..., None]) - target) * w[..., None]).astype(kernel.dtype)
            out["d_hidden"] = dot("bcv,dv->bcd", dz, kernel).astype(hidden.dtype)
            # one partial d_kernel per row (a run has one row per data-parallel rank): rows are
            # split over the data-parallel devices, so a sum over rows inside the loop would be a
            # reduction across devices every chunk; the rows are summed once, after it
            d_kernel = d_kernel + nn.with_logical_constraint(dot("bcd,bcv->bdv", h, dz), _ROW_KERNEL)
        return d_kernel, out

    init = None
    if with_grad:
        init = nn.with_logical_constraint(jnp.zeros((rows, *kernel.shape), jnp.float32), _ROW_KERNEL)
    d_kernel, out = jax.lax.scan(body, init, xs)
    out = {k: _unchunk(v, length) for k, v in out.items()}
    loss = reduce_loss(out["nll"], out.get("smooth"), valid, smoothing)
    stats = reduce_stats(out["nll"], out["predicted"], labels, valid, type_ids, num_types)
    grads = (out["d_hidden"], d_kernel.sum(axis=0)) if with_grad else None
    return loss, stats, grads


class _Static(NamedTuple):
    """The fixed arguments of one fused loss (hashable: the custom_vjp's non-differentiable one)."""

    num_types: int
    smoothing: float
    chunk: int
    precision: Any
    kernel_dtype: Any


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused(hidden, kernel, labels, type_ids, static: _Static):
    loss, stats, _ = _pass(hidden, kernel, labels, type_ids, *static[:4], with_grad=False)
    return loss, stats


def _fused_fwd(hidden, kernel, labels, type_ids, static: _Static):
    loss, stats, grads = _pass(hidden, kernel, labels, type_ids, *static[:4], with_grad=True)
    return (loss, stats), grads


def _fused_bwd(static: _Static, grads, cotangents):
    d_hidden, d_kernel = grads
    # the stored gradients carry the factor rows * T (see `_pass`); the stats get no gradient
    factor = cotangents[0].astype(jnp.float32) / (d_hidden.shape[0] * d_hidden.shape[1])
    return (
        (d_hidden.astype(jnp.float32) * factor).astype(d_hidden.dtype),
        (d_kernel * factor).astype(static.kernel_dtype),
        None,
        None,
    )


_fused.defvjp(_fused_fwd, _fused_bwd)
