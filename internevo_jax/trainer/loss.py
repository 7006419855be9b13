"""Token-mean cross-entropy with InternEvo's reduction, torch-style label smoothing, and token stats."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from internevo_jax.names import IGNORE_INDEX


def _token_nll(logits: jax.Array, labels: jax.Array):
    """(fp32 logits, valid mask, logsumexp, per-token negative log-likelihood); ignored labels read
    class 0 so the gather stays in range, and the mask removes them."""
    logits = logits.astype(jnp.float32)
    valid = labels != IGNORE_INDEX
    logz = jax.nn.logsumexp(logits, axis=-1)
    label_logit = jnp.take_along_axis(logits, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return logits, valid, logz, logz - label_logit


def cross_entropy(
    logits: jax.Array, labels: jax.Array, batch: dict | None = None, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Loss of one micro-batch: per-row token mean over labels != -100, then the mean over rows.

    A row is one data-parallel rank's pack, so the mean over rows equals InternEvo's per-rank mean
    followed by the data-parallel gradient average. Label smoothing follows
    torch.nn.CrossEntropyLoss: (1 - e) * nll + e * mean_c(-log p_c). A row without any valid
    label contributes 0.
    """
    del batch
    logits, valid, logz, per_token = _token_nll(logits, labels)
    smooth = logz - logits.mean(axis=-1) if label_smoothing > 0 else None
    return reduce_loss(per_token, smooth, valid, label_smoothing)


def reduce_loss(
    nll: jax.Array, smooth: jax.Array | None, valid: jax.Array, label_smoothing: float
) -> jax.Array:
    """The loss from per-token values [rows, T]: `nll`, `smooth` = logz - mean_c z_c (used when
    label_smoothing > 0) and the valid mask; shared by `cross_entropy` and the chunked loss."""
    per_token = nll
    if label_smoothing > 0:
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    validf = valid.astype(jnp.float32)
    row_loss = (per_token * validf).sum(axis=-1) / jnp.maximum(validf.sum(axis=-1), 1.0)
    return row_loss.mean()


def token_stats(
    logits: jax.Array, labels: jax.Array, type_ids: jax.Array | None = None, num_types: int = 0
) -> dict:
    """Summed statistics over valid tokens: nll_sum, tokens, correct (argmax == label).

    With `num_types` > 0 also per dataset type: type_tokens, type_correct, type_nll ([num_types]).
    These feed acc, perplexity and the per-type metrics, whatever loss is being trained.
    """
    logits, valid, _, nll = _token_nll(logits, labels)
    return reduce_stats(nll, jnp.argmax(logits, axis=-1), labels, valid, type_ids, num_types)


def reduce_stats(
    nll: jax.Array,
    predicted: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    type_ids: jax.Array | None = None,
    num_types: int = 0,
) -> dict:
    """`token_stats` from per-token values: nll, the predicted class (argmax), labels and the valid
    mask; shared by `token_stats` and the chunked loss."""
    validf = valid.astype(jnp.float32)
    correct = ((predicted == labels) & valid).astype(jnp.float32)
    stats = {"nll_sum": (nll * validf).sum(), "tokens": validf.sum(), "correct": correct.sum()}
    if num_types and type_ids is not None:
        onehot = jax.nn.one_hot(type_ids, num_types, dtype=jnp.float32) * validf[..., None]
        stats["type_tokens"] = onehot.sum(axis=tuple(range(onehot.ndim - 1)))
        stats["type_correct"] = jnp.einsum("...t,...->t", onehot, correct)
        stats["type_nll"] = jnp.einsum("...t,...->t", onehot, nll)
    return stats
