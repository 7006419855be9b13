"""Token-mean cross-entropy with InternEvo's reduction and torch-style label smoothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100


def cross_entropy(
    logits: jax.Array, labels: jax.Array, batch: dict | None = None, *, label_smoothing: float = 0.0
) -> tuple[jax.Array, dict]:
    """Loss of one micro-batch: per-row token mean over labels != -100, then the mean over rows.

    A row is one data-parallel rank's pack, so the mean over rows equals InternEvo's per-rank mean
    followed by the data-parallel gradient average. Label smoothing follows
    torch.nn.CrossEntropyLoss: (1 - e) * nll + e * mean_c(-log p_c).
    Returns (loss, stats) with summed token statistics for the metrics line.
    """
    del batch
    logits = logits.astype(jnp.float32)
    valid = labels != IGNORE_INDEX
    safe_labels = jnp.where(valid, labels, 0)
    logz = jax.nn.logsumexp(logits, axis=-1)
    label_logit = jnp.take_along_axis(logits, safe_labels[..., None], axis=-1)[..., 0]
    nll = logz - label_logit
    per_token = nll
    if label_smoothing > 0:
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * (logz - logits.mean(axis=-1))
    validf = valid.astype(jnp.float32)
    row_tokens = validf.sum(axis=-1)
    row_loss = (per_token * validf).sum(axis=-1) / jnp.maximum(row_tokens, 1.0)
    loss = row_loss.mean()
    correct = (jnp.argmax(logits, axis=-1) == labels) & valid
    stats = {
        "nll_sum": (nll * validf).sum(),
        "tokens": row_tokens.sum(),
        "correct": correct.astype(jnp.float32).sum(),
    }
    return loss, stats
