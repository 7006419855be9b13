"""The compiled train step: micro_num micro-batches with gradient accumulation, then one update."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from internevo_jax.model.moe.layer import MOE_COLLECTION
from internevo_jax.names import PIPELINE
from internevo_jax.optim import DynamicLossScaler, grad_norm_of, hyperparams_of, next_hyperparams
from internevo_jax.parallel import batch_sharding, mesh_context
from internevo_jax.parallel.pipeline import pipelined_forward
from internevo_jax.parallel.zero import compute_copy, compute_dtypes, compute_shardings, reduce_layouts
from internevo_jax.trainer.chunked_loss import chunked_cross_entropy
from internevo_jax.trainer.loss import cross_entropy, token_stats
from internevo_jax.trainer.moe_loss import moe_loss_and_metrics
from internevo_jax.trainer.state import TrainState

MODEL_INPUTS = ("input_ids", "positions", "segment_ids")

# loss_fn(logits, labels, micro_batch) -> scalar loss, or (scalar loss, {name: scalar metric})
LossFn = Callable[[jax.Array, jax.Array, dict], jax.Array | tuple[jax.Array, dict]]

# forward(prepare, objective, params, batch, scale) -> (mean gradients, objective outputs stacked
# over micro-batches): how a step's micro-batches run through the model. `prepare(params)` is the
# copy the model computes with; `objective(variables, hidden, micro, moe_state=None)` -> (loss,
# token stats, extras) from the hidden states the model's layers leave (its `stage`, before the
# final norm) and what its MoE layers sowed: the objective applies the head itself, as full
# logits or inside the chunked loss, and adds the MoE auxiliary loss.
Forward = Callable[..., tuple[Any, Any]]


def fused_head_loss(
    model: nn.Module,
    variables,
    hidden: jax.Array,
    labels: jax.Array,
    type_ids: jax.Array | None,
    num_types: int,
    label_smoothing: float,
    chunk_size: int,
) -> tuple[jax.Array, dict]:
    """(loss, token stats) of the model's head on `hidden` (the output of its layers), chunked:
    the model's final norm and head kernel (`head_inputs`) into `chunked_cross_entropy`."""
    normed, kernel = model.apply(variables, hidden, method="head_inputs")
    return chunked_cross_entropy(
        normed,
        kernel,
        labels,
        type_ids,
        num_types=num_types,
        label_smoothing=label_smoothing,
        chunk_size=chunk_size,
        precision=getattr(getattr(model, "args", None), "precision", None),
    )


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def scan_micro_batches(model: nn.Module) -> Forward:
    """Micro-batches one after another in a `lax.scan`, each with its own forward and backward:
    only one micro-batch of activations is alive at a time, and the gradients of `loss * scale`
    accumulate in the carry (in the parameters' dtype, fp32)."""

    def forward(prepare, objective, params, batch: dict, scale):
        def scaled(p, micro):
            variables = {"params": prepare(p)}
            inputs = (micro[k] for k in MODEL_INPUTS)
            hidden, sown = model.apply(variables, *inputs, method="hidden", mutable=[MOE_COLLECTION])
            out = objective(variables, hidden, micro, sown.get(MOE_COLLECTION))
            return out[0] * scale, out

        grad_fn = jax.value_and_grad(scaled, has_aux=True)

        def accumulate(grad_acc, micro):
            (_, out), g = grad_fn(params, micro)
            return jax.tree.map(jnp.add, grad_acc, g), out

        zeros = jax.tree.map(jnp.zeros_like, params)
        grad_sum, outs = jax.lax.scan(accumulate, zeros, batch)
        micro_num = batch["input_ids"].shape[0]
        return jax.tree.map(lambda g: g / (micro_num * scale), grad_sum), outs

    return forward


def pipeline_schedule(model: nn.Module, mesh, param_shardings, chunks: int = 1) -> Forward:
    """All micro-batches at once through `parallel.pipeline.pipelined_forward` (mesh "pipeline"
    axis > 1, stacked layers); the gradient of the mean loss * scale over the whole schedule.
    `param_shardings` are the compute-copy shardings (the layer weights are staged from them)."""
    run = pipelined_forward(model, mesh, param_shardings, chunks)

    def forward(prepare, objective, params, batch: dict, scale):
        def scaled(p):
            outs = run(prepare(p), batch, objective)
            return outs[0].mean() * scale, outs

        (_, outs), g = jax.value_and_grad(scaled, has_aux=True)(params)
        return jax.tree.map(lambda x: x / scale, g), outs

    return forward


def make_grads_fn(
    model: nn.Module,
    *,
    forward: Forward | None = None,
    loss_fn: LossFn | None = None,
    label_smoothing: float = 0.0,
    num_types: int = 0,
    param_transform: Callable | None = None,
    ce_chunk_size: int = 0,
    moe_loss_coeff: float = 1.0,
):
    """Build `grads(params, batch, scale) -> (mean gradients, per-micro losses, summed stats, extras)`.

    `batch` holds arrays [micro_num, rows, T]. `forward` says how the micro-batches run through
    the model (default `scan_micro_batches(model)`; `pipeline_schedule` pipelines the layers);
    either way the gradients are the unscaled mean over micro-batches of the gradients of
    `loss * scale`. `extras` are the loss function's own metrics, averaged over micro-batches.
    `param_transform(params)` (differentiable) makes the copy the model computes with, e.g. the
    ZeRO-1 gather of `parallel.zero.compute_copy`.
    `ce_chunk_size` > 0 (loss.ce_chunk_size) computes the default loss with the head fused into
    it, that many tokens of each row at a time (`chunked_loss.chunked_cross_entropy`: no full
    logits); 0, or a `loss_fn` of one's own (it takes the logits), forms the full logits.
    A mixture-of-experts model's auxiliary loss (trainer/moe_loss.py, times `moe_loss_coeff`,
    loss.moe_loss_coeff) is added to every micro-batch's loss and reported in the extras.
    """
    fused = loss_fn is None and ce_chunk_size > 0
    moe = getattr(getattr(model, "args", None), "moe", None)
    if loss_fn is None:
        loss_fn = functools.partial(cross_entropy, label_smoothing=label_smoothing)
    if forward is None:
        forward = scan_micro_batches(model)
    prepare = param_transform if param_transform is not None else (lambda p: p)

    def language_objective(variables, hidden, micro):
        labels, type_ids = micro["labels"], micro.get("type_ids")
        if fused:
            loss, stats = fused_head_loss(
                model, variables, hidden, labels, type_ids, num_types, label_smoothing, ce_chunk_size
            )
            return loss, stats, {}
        logits = model.apply(variables, hidden, method="logits")
        out = loss_fn(logits, labels, micro)
        loss, extras = out if isinstance(out, tuple) else (out, {})
        return loss, token_stats(logits, labels, type_ids, num_types), extras

    def objective(variables, hidden, micro, moe_state=None):
        loss, stats, extras = language_objective(variables, hidden, micro)
        if moe is not None:
            moe_loss, moe_extras = moe_loss_and_metrics(moe_state, moe, moe_loss_coeff)
            loss, extras = loss + moe_loss, {**extras, **moe_extras}
        return loss, stats, extras

    def grads(params, batch: dict, scale):
        mean, (losses, stats, extras) = forward(prepare, objective, params, batch, scale)
        summed = jax.tree.map(lambda x: x.sum(axis=0), stats)
        return mean, losses, summed, jax.tree.map(lambda x: x.mean(axis=0), extras)

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
    type_names: tuple[str, ...] = (),
    ce_chunk_size: int = 0,
    moe_loss_coeff: float = 1.0,
    schedules: tuple[Callable, Callable] | None = None,
) -> Callable:
    """Build `step(state, batch) -> (state, metrics)`, jitted with explicit shardings.

    batch: dict of int32 arrays [micro_num, rows, packed_length] (see `make_grads_fn`).
    On non-finite gradients the whole update is skipped: params, optimizer state and schedules
    stay bit-identical, and the loss scaler backs off.
    `type_names` (dataset type per type id) adds tokens/<type>, acc/<type> and loss/<type>.
    `grad_hook(grads, step)` may transform the averaged gradients; `step` is the 0-based batch
    index passed to the step (tests use it to inject overflows on chosen steps).
    `ce_chunk_size` (loss.ce_chunk_size) and `moe_loss_coeff` (loss.moe_loss_coeff): see
    `make_grads_fn`. An MoE model's metrics add moe_loss (and "loss" is the cross-entropy alone,
    as InternEvo prints it), moe_load [layers, experts] and moe_dropped [layers].
    `schedules` (lr schedule, beta2 schedule): the metrics' lr and adam_beta2 are then the rates
    the next update will use, as InternEvo's line shows them; without them (an optimizer built
    outside `build_optimizer`), the rates this update used.

    Layout (docs/parallel.md): `state_shardings.params` is the fp32 master layout (ZeRO-1:
    sharded over "fsdp"); the model runs on the compute copy (`parallel.zero.compute_copy`) and
    `rules` place the activations. With a "pipeline" axis > 1 the layers run pipelined, with
    `rules.pipeline_chunks` chunks per stage.
    """
    master = state_shardings.params
    compute = compute_shardings(master, rules)
    dtypes = compute_dtypes(master, getattr(model, "args", None))
    reduce = reduce_layouts(master, compute, master)
    common = dict(
        loss_fn=loss_fn,
        label_smoothing=label_smoothing,
        num_types=len(type_names),
        ce_chunk_size=ce_chunk_size,
        moe_loss_coeff=moe_loss_coeff,
        param_transform=lambda p: compute_copy(p, dtypes, compute, master, reduce),
    )
    if mesh.shape[PIPELINE] > 1:
        forward = pipeline_schedule(model, mesh, compute, getattr(rules, "pipeline_chunks", 1))
    else:
        forward = scan_micro_batches(model)
    grads_fn = make_grads_fn(model, forward=forward, **common)

    def step(state: TrainState, batch: dict, step_index: jax.Array):
        params = state.params
        grads, losses, stats, extras = grads_fn(params, batch, state.loss_scale.scale)
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
        # lr, beta2 and the loss scale as left for the next step: InternEvo prints its schedulers
        # and its scaler after they have stepped.
        if schedules is None:
            hp = hyperparams_of(new_opt_state)
        else:
            hp = next_hyperparams(new_state.opt_state, *schedules)
        metrics = {
            "loss": losses.mean() - extras.get("moe_loss", 0.0),
            "grad_norm": grad_norm_of(new_opt_state),
            "lr": hp["lr"],
            "adam_beta2": hp["adam_beta2"],
            "loss_scale": new_state.loss_scale.scale,
            "overflow": jnp.logical_not(finite),
            "acc": stats["correct"] / jnp.maximum(stats["tokens"], 1.0),
            "perplexity": jnp.exp(stats["nll_sum"] / jnp.maximum(stats["tokens"], 1.0)),
            "tokens": stats["tokens"],
            **extras,
        }
        for i, name in enumerate(type_names):  # InternEvo's per-dataset-type metrics
            count = stats["type_tokens"][i]
            metrics[f"tokens/{name}"] = count
            metrics[f"acc/{name}"] = stats["type_correct"][i] / jnp.maximum(count, 1.0)
            metrics[f"loss/{name}"] = stats["type_nll"][i] / jnp.maximum(count, 1.0)
        return new_state, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )

    def run(state: TrainState, batch: dict, step_index: int = 0):
        with mesh_context(mesh, rules, matmul_precision):
            return jitted(state, batch, jnp.int32(step_index))

    run.jitted = jitted
    return run
