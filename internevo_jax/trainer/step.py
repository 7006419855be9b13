"""The compiled train step: micro_num micro-batches with gradient accumulation, then one update."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from internevo_jax.optim import DynamicLossScaler, grad_norm_of, hyperparams_of
from internevo_jax.parallel import batch_sharding
from internevo_jax.trainer.loss import cross_entropy
from internevo_jax.trainer.state import TrainState

MODEL_INPUTS = ("input_ids", "positions", "segment_ids")

# loss_fn(logits, labels, micro_batch) -> (scalar loss, dict of summed stats)
LossFn = Callable[[jax.Array, jax.Array, dict], tuple[jax.Array, dict]]


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def make_grads_fn(model: nn.Module, *, loss_fn: LossFn | None = None, label_smoothing: float = 0.0):
    """Build `grads(params, batch, scale) -> (mean gradients, per-micro losses, summed stats)`.

    Runs a `lax.scan` over the micro_num axis of `batch`, so only one micro-batch of activations
    is alive at a time; gradients of `loss * scale` accumulate in fp32 and are returned divided by
    micro_num * scale, i.e. the unscaled mean over micro-batches.
    """
    if loss_fn is None:
        loss_fn = functools.partial(cross_entropy, label_smoothing=label_smoothing)

    def micro_loss(params, micro, scale):
        logits = model.apply({"params": params}, *(micro[k] for k in MODEL_INPUTS))
        loss, stats = loss_fn(logits, micro["labels"], micro)
        return loss * scale, (loss, stats)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def grads(params, batch: dict, scale):
        micro_num = batch["input_ids"].shape[0]

        def accumulate(grad_acc, micro):
            (_, (loss, stats)), g = grad_fn(params, micro, scale)
            return jax.tree.map(jnp.add, grad_acc, g), (loss, stats)

        zeros = jax.tree.map(jnp.zeros_like, params)
        grad_sum, (losses, stats) = jax.lax.scan(accumulate, zeros, batch)
        mean = jax.tree.map(lambda g: g / (micro_num * scale), grad_sum)
        return mean, losses, jax.tree.map(jnp.sum, stats)

    return grads


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    scaler: DynamicLossScaler,
    mesh,
    rules,
    state_shardings: TrainState,
    *,
    loss_fn: LossFn | None = None,
    label_smoothing: float = 0.0,
    matmul_precision: str | None = None,
    grad_hook: Callable | None = None,
) -> Callable:
    """Build `step(state, batch) -> (state, metrics)`, jitted with explicit shardings.

    batch: dict of int32 arrays [micro_num, rows, packed_length] (see `make_grads_fn`).
    On non-finite gradients the whole update is skipped: params, optimizer state and schedules
    stay bit-identical, and the loss scaler backs off.
    `grad_hook(grads, step)` may transform the averaged gradients; `step` is the 0-based batch
    index passed to the step (tests use it to inject overflows on chosen steps).
    """
    grads_fn = make_grads_fn(model, loss_fn=loss_fn, label_smoothing=label_smoothing)

    def step(state: TrainState, batch: dict, step_index: jax.Array):
        params = state.params
        grads, losses, stats = grads_fn(params, batch, state.loss_scale.scale)
        if grad_hook is not None:
            grads = grad_hook(grads, step_index)
        finite = _all_finite(grads)

        updates, new_opt_state = tx.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_state = TrainState(
            params=jax.tree.map(keep, new_params, params),
            opt_state=jax.tree.map(keep, new_opt_state, state.opt_state),
            loss_scale=scaler.update(state.loss_scale, jnp.logical_not(finite)),
        )
        # lr and beta2 as applied by this update; the scale as left for the next step (InternEvo
        # prints the scaler after its update).
        hp = hyperparams_of(new_opt_state)
        metrics = {
            "loss": losses.mean(),
            "grad_norm": grad_norm_of(new_opt_state),
            "lr": hp["lr"],
            "adam_beta2": hp["adam_beta2"],
            "loss_scale": new_state.loss_scale.scale,
            "overflow": jnp.logical_not(finite),
            "acc": stats["correct"] / jnp.maximum(stats["tokens"], 1.0),
            "perplexity": jnp.exp(stats["nll_sum"] / jnp.maximum(stats["tokens"], 1.0)),
            "tokens": stats["tokens"],
        }
        return new_state, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )

    def run(state: TrainState, batch: dict, step_index: int = 0):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules), jax.default_matmul_precision(matmul_precision):
            return jitted(state, batch, jnp.int32(step_index))

    run.jitted = jitted
    return run
