"""Validation: forward passes over each validation set, reported as val/<name>_loss, _acc, _plex."""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from internevo_jax.parallel import batch_sharding, mesh_context, put_batch
from internevo_jax.trainer.loss import token_stats
from internevo_jax.trainer.step import MODEL_INPUTS, fused_head_loss


def make_eval_step(
    model: nn.Module,
    mesh,
    rules,
    param_shardings,
    *,
    matmul_precision: str | None = None,
    window_len: int | None = None,
    ce_chunk_size: int = 0,
):
    """Build `eval(params, batch) -> summed {nll_sum, tokens, correct}` over all micro-batches.

    `window_len` (data.seq_len): validation rows are windows of that many tokens, one sample
    each, real tokens first and padding (label -100) after (ValidSet.get_batch), so attention
    runs per window without a mask (`CausalLM.windowed`); the loss is that of the segment ids.
    `ce_chunk_size` > 0 (loss.ce_chunk_size) computes the statistics with the chunked, fused head
    and loss (`chunked_loss`), never the full logits.
    """
    if window_len and hasattr(model, "windowed"):
        model = model.windowed(window_len)

    def evaluate(params, batch):
        def body(total, micro):
            variables = {"params": params}
            inputs = [micro[k] for k in MODEL_INPUTS]
            if ce_chunk_size > 0:
                hidden = model.apply(variables, *inputs, method="hidden")
                _, stats = fused_head_loss(
                    model, variables, hidden, micro["labels"], None, 0, 0.0, ce_chunk_size
                )
            else:
                stats = token_stats(model.apply(variables, *inputs), micro["labels"])
            return jax.tree.map(jnp.add, total, stats), None

        zero = {"nll_sum": jnp.float32(0), "tokens": jnp.float32(0), "correct": jnp.float32(0)}
        total, _ = jax.lax.scan(body, zero, batch)
        return total

    jitted = jax.jit(
        evaluate,
        in_shardings=(param_shardings, batch_sharding(mesh)),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )

    def run(params, batch):
        with mesh_context(mesh, rules, matmul_precision):
            return jitted(params, batch)

    return run


def evaluate_sets(eval_step, params, valid_sets: Mapping, mesh, dp_size: int) -> dict[str, float]:
    """Token-weighted loss, accuracy and perplexity of every validation set.

    A set's batches are queued back to back and their statistics read once, when the set is done
    (not one host round trip per batch); the sums are taken on the host in float64, so token
    counts stay exact on sets of any size.
    """
    out: dict[str, float] = {}
    for name, vset in valid_sets.items():
        per_batch = [eval_step(params, put_batch(vset.get_batch(i), mesh, dp_size)) for i in range(len(vset))]
        totals = {"nll_sum": 0.0, "tokens": 0.0, "correct": 0.0}
        for stats in jax.device_get(per_batch):
            for k in totals:
                totals[k] += float(stats[k])
        tokens = max(totals["tokens"], 1.0)
        loss = totals["nll_sum"] / tokens
        out[f"val/{name}_loss"] = loss
        out[f"val/{name}_acc"] = totals["correct"] / tokens
        out[f"val/{name}_plex"] = math.exp(min(loss, 700.0))
    return out
