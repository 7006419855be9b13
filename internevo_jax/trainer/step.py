"""The compiled train step: micro_num micro-batches with gradient accumulation, then one update."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from internevo_jax.config import ConfigError
from internevo_jax.model.args import ModelArgs
from internevo_jax.model.causal_lm import CausalLM, decoder_stack
from internevo_jax.model.layers import Embedding, Head, make_norm, scale_grad
from internevo_jax.monitor import logger
from internevo_jax.names import ACT_EMBED, ACT_PIPELINE_STATE, ACT_VOCAB
from internevo_jax.optim import DynamicLossScaler, grad_norm_of, hyperparams_of
from internevo_jax.parallel import batch_sharding, mesh_context
from internevo_jax.parallel.pipeline import PipelineSchedule, run_pipeline
from internevo_jax.parallel.zero import compute_copy, compute_dtypes, compute_shardings, reduce_layouts
from internevo_jax.trainer.loss import cross_entropy, token_stats
from internevo_jax.trainer.state import TrainState

MODEL_INPUTS = ("input_ids", "positions", "segment_ids")

# loss_fn(logits, labels, micro_batch) -> scalar loss, or (scalar loss, {name: scalar metric})
LossFn = Callable[[jax.Array, jax.Array, dict], jax.Array | tuple[jax.Array, dict]]


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def make_grads_fn(
    model: nn.Module,
    *,
    loss_fn: LossFn | None = None,
    label_smoothing: float = 0.0,
    num_types: int = 0,
    param_transform: Callable | None = None,
):
    """Build `grads(params, batch, scale) -> (mean gradients, per-micro losses, summed stats, extras)`.

    Runs a `lax.scan` over the micro_num axis of `batch`, so only one micro-batch of activations
    is alive at a time; gradients of `loss * scale` accumulate in fp32 and are returned divided by
    micro_num * scale, i.e. the unscaled mean over micro-batches. `extras` are the loss function's
    own metrics, averaged over micro-batches. `param_transform(params)` (differentiable) makes the
    copy the model computes with, e.g. the ZeRO-1 gather of `parallel.zero.compute_copy`.
    """
    if loss_fn is None:
        loss_fn = functools.partial(cross_entropy, label_smoothing=label_smoothing)

    def micro_loss(params, micro, scale):
        used = params if param_transform is None else param_transform(params)
        logits = model.apply({"params": used}, *(micro[k] for k in MODEL_INPUTS))
        out = loss_fn(logits, micro["labels"], micro)
        loss, extras = out if isinstance(out, tuple) else (out, {})
        stats = token_stats(logits, micro["labels"], micro.get("type_ids"), num_types)
        return loss * scale, (loss, stats, extras)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def grads(params, batch: dict, scale):
        micro_num = batch["input_ids"].shape[0]

        def accumulate(grad_acc, micro):
            (_, aux), g = grad_fn(params, micro, scale)
            return jax.tree.map(jnp.add, grad_acc, g), aux

        zeros = jax.tree.map(jnp.zeros_like, params)
        grad_sum, (losses, stats, extras) = jax.lax.scan(accumulate, zeros, batch)
        mean = jax.tree.map(lambda g: g / (micro_num * scale), grad_sum)
        summed = jax.tree.map(lambda x: x.sum(axis=0), stats)
        return mean, losses, summed, jax.tree.map(jnp.mean, extras)

    return grads


class _Layers(nn.Module):
    """k stacked decoder layers: one pipeline stage's chunk, parameters {"layers": [k, ...]}."""

    args: ModelArgs

    @nn.compact
    def __call__(self, x, positions, segment_ids):
        return decoder_stack(self.args, x, positions, segment_ids)


def make_pipeline_grads_fn(
    model: nn.Module,
    mesh,
    compute,
    *,
    chunks: int = 1,
    loss_fn: LossFn | None = None,
    label_smoothing: float = 0.0,
    num_types: int = 0,
    param_transform: Callable | None = None,
):
    """`make_grads_fn` for a mesh with a "pipeline" axis > 1: the same results, layers pipelined.

    The model must be a CausalLM with stacked layers (scan_layers): the embedding runs for every
    micro-batch first, the layers go through `parallel.pipeline.run_pipeline`, then the final norm,
    head and loss run per micro-batch. `compute` are the compute-copy shardings (the stacked layer
    weights are split into stages from them).
    """
    args = getattr(model, "args", None)
    if not isinstance(model, CausalLM) or args is None or not args.scan_layers:
        raise ConfigError(
            "pipeline parallelism needs an InternLM-family model with stacked layers: set "
            "model.scan_layers=True.",
            key="model.scan_layers",
        )
    if loss_fn is None:
        loss_fn = functools.partial(cross_entropy, label_smoothing=label_smoothing)
    stages = mesh.shape["pipeline"]
    k = args.num_layers // (stages * chunks)
    chunk_args = dataclasses.replace(args, num_layers=k, checkpoint_layers=k if args.remat_layers else 0)
    layers = _Layers(chunk_args)
    embedding, head, norm = Embedding(args), Head(args), make_norm(args, "norm")
    state_names = ACT_PIPELINE_STATE

    def pin_state(x):
        return nn.with_logical_constraint(x, state_names[: x.ndim])

    def pin_params(tree):
        def pin(p, sharding):
            spec = PartitionSpec("pipeline", None, None, *tuple(sharding.spec)[1:])
            return jax.lax.with_sharding_constraint(p, NamedSharding(mesh, spec))

        return jax.tree.map(pin, tree, compute["layers"])

    def stage_fn(params, x, side):
        return layers.apply({"params": {"layers": params}}, x, side["positions"], side["segment_ids"])

    def total_loss(params, batch, scale):
        p = params if param_transform is None else param_transform(params)
        x = embedding.apply({"params": p["embedding"]}, batch["input_ids"])
        x = nn.with_logical_constraint(scale_grad(x, args.embed_grad_scale), (None, *ACT_EMBED))
        side = {"positions": batch["positions"], "segment_ids": batch["segment_ids"]}
        schedule = PipelineSchedule(stages, x.shape[0], chunks)
        logger.info(schedule.describe())  # once per compilation: the bubble this layout pays
        hidden = run_pipeline(
            stage_fn, p["layers"], x, side, schedule, pin_state=pin_state, pin_params=pin_params
        )

        def per_micro(item):
            h, micro = item
            if args.final_norm:
                h = norm.apply({"params": p["norm"]}, h)
            logits = nn.with_logical_constraint(head.apply({"params": p["head"]}, h), ACT_VOCAB)
            out = loss_fn(logits, micro["labels"], micro)
            loss, extras = out if isinstance(out, tuple) else (out, {})
            return loss, token_stats(logits, micro["labels"], micro.get("type_ids"), num_types), extras

        losses, stats, extras = jax.lax.map(jax.checkpoint(per_micro), (hidden, batch))
        return losses.mean() * scale, (losses, stats, extras)

    grad_fn = jax.value_and_grad(total_loss, has_aux=True)

    def grads(params, batch: dict, scale):
        (_, (losses, stats, extras)), g = grad_fn(params, batch, scale)
        mean = jax.tree.map(lambda x: x / scale, g)
        return mean, losses, jax.tree.map(lambda x: x.sum(axis=0), stats), jax.tree.map(jnp.mean, extras)

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
) -> Callable:
    """Build `step(state, batch) -> (state, metrics)`, jitted with explicit shardings.

    batch: dict of int32 arrays [micro_num, rows, packed_length] (see `make_grads_fn`).
    On non-finite gradients the whole update is skipped: params, optimizer state and schedules
    stay bit-identical, and the loss scaler backs off.
    `type_names` (dataset type per type id) adds tokens/<type>, acc/<type> and loss/<type>.
    `grad_hook(grads, step)` may transform the averaged gradients; `step` is the 0-based batch
    index passed to the step (tests use it to inject overflows on chosen steps).

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
        param_transform=lambda p: compute_copy(p, dtypes, compute, master, reduce),
    )
    if mesh.shape["pipeline"] > 1:
        chunks = getattr(rules, "pipeline_chunks", 1)
        grads_fn = make_pipeline_grads_fn(model, mesh, compute, chunks=chunks, **common)
    else:
        grads_fn = make_grads_fn(model, **common)

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
