"""Pipeline parallelism inside one jitted step: a circular (interleaved) schedule over "pipeline".

The stacked layers [L, ...] are cut into `chunks` x `stages` pieces of k = L / (chunks * stages)
layers; layer l belongs to repeat r = l // (stages * k) on stage s = (l // k) % stages, so with
one chunk stage s holds the contiguous layers [s*k, (s+1)*k), exactly what sharding the "layers"
axis over "pipeline" stores on it.

Every iteration all stages run at once (a vmap over the stage axis, sharded over "pipeline");
then the activations move one stage on (XLA turns the roll into a collective-permute). Stage 0
reads the next micro-batch from a buffer that starts with the embeddings and collects the last
stage's outputs, so an item goes round `chunks` times. micro_num * chunks + stages - 1 iterations
finish micro_num micro-batches; the stage-iterations spent idle are the bubble,
(stages - 1) / (micro_num * chunks + stages - 1). Gradients come from differentiating the whole
loop (the backward runs the schedule in reverse); each stage computation is rematerialised, so an
iteration keeps only its stage inputs, like GPipe/1F1B with activation checkpointing.

`pipelined_forward` runs a model through that schedule with the model's own pieces (its `embed`,
the `stage` of a `chunk` of its layers, then the objective applies its head), so whatever block a
model type stacks is what the pipeline runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from internevo_jax.config import ConfigError
from internevo_jax.names import ACT_PIPELINE_STATE, PIPELINE

logger = logging.getLogger("internevo_jax")


@dataclasses.dataclass(frozen=True)
class PipelineSchedule:
    """The shape of one step's pipeline: stages, micro-batches and chunks per stage."""

    stages: int
    micro_num: int
    chunks: int = 1

    def __post_init__(self):
        if self.chunks > 1 and self.micro_num < self.stages:
            raise ConfigError(
                f"an interleaved pipeline (model.num_chunks={self.chunks}) needs data.micro_num >= "
                f"parallel.pipeline.size: {self.micro_num} < {self.stages}; a micro-batch must leave the "
                "last stage before it re-enters the first. Raise micro_num or set num_chunks=1.",
                key="data.micro_num",
            )

    @property
    def iterations(self) -> int:
        return self.micro_num * self.chunks + self.stages - 1

    @property
    def bubble(self) -> float:
        """Fraction of stage-iterations that are idle."""
        return (self.stages - 1) / self.iterations

    def describe(self) -> str:
        return (
            f"pipeline: {self.stages} stages x {self.chunks} chunk(s), {self.micro_num} micro-batches, "
            f"{self.iterations} iterations, bubble {100 * self.bubble:.1f}%"
        )


def split_layers(leaf: jax.Array, schedule: PipelineSchedule) -> jax.Array:
    """[L, ...] stacked layer weights -> [stages, chunks, k, ...] in the circular order."""
    s, v = schedule.stages, schedule.chunks
    k = leaf.shape[0] // (s * v)
    return jnp.swapaxes(leaf.reshape(v, s, k, *leaf.shape[1:]), 0, 1)


def run_pipeline(
    stage_fn: Callable,
    layer_params,
    inputs: jax.Array,
    side_inputs,
    schedule: PipelineSchedule,
    *,
    pin_state: Callable[[jax.Array], jax.Array],
    pin_params: Callable,
) -> jax.Array:
    """Run every micro-batch of `inputs` [M, ...] through all layers; returns [M, ...].

    `stage_fn(params, x, side)` applies k layers (params leaves [k, ...]) to one micro-batch;
    `side_inputs` is a pytree of per-micro-batch arrays [M, ...] the layers also read (positions,
    segment ids). `pin_state` constrains a [stages, ...] activation to the stage sharding and
    `pin_params` does the same for the split layer weights (leaves [stages, chunks, k, ...]).
    """
    s, m, v = schedule.stages, schedule.micro_num, schedule.chunks
    if inputs.shape[0] != m:
        raise ValueError(f"pipeline built for {m} micro-batches got {inputs.shape[0]}")
    stage_params = pin_params(jax.tree.map(lambda p: split_layers(p, schedule), layer_params))
    stage_ids = jnp.arange(s)
    run_stages = jax.vmap(jax.checkpoint(stage_fn), spmd_axis_name=PIPELINE)

    def pick_repeat(params, repeat):
        return jax.tree.map(lambda p: jax.lax.dynamic_index_in_dim(p, repeat, 0, keepdims=False), params)

    def iteration(carry, i):
        state, buffer = carry
        item = i - stage_ids  # the item each stage works on; outside [0, m*v) it idles
        micro = jnp.clip(item, 0, m * v - 1) % m
        repeat = jnp.clip(item, 0, m * v - 1) // m
        first = jax.lax.dynamic_index_in_dim(buffer, i % m, 0, keepdims=False)
        state = pin_state(state.at[0].set(first))
        side = jax.tree.map(lambda x: pin_state(x[micro]), side_inputs)
        params = jax.vmap(pick_repeat)(stage_params, repeat)
        out = pin_state(run_stages(params, state, side))
        done = i - (s - 1)  # the item leaving the last stage
        slot = jnp.clip(done, 0, m * v - 1) % m
        keep = jax.lax.dynamic_index_in_dim(buffer, slot, 0, keepdims=False)
        leaving = jnp.where((done >= 0) & (done < m * v), out[s - 1], keep)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, leaving, slot, 0)
        return (jnp.roll(out, 1, axis=0), buffer), None

    state = pin_state(jnp.zeros((s, *inputs.shape[1:]), inputs.dtype))
    (_, outputs), _ = jax.lax.scan(iteration, (state, inputs), jnp.arange(schedule.iterations))
    return outputs


def pipelined_forward(model: nn.Module, mesh, param_shardings, chunks: int = 1) -> Callable:
    """`forward(params, batch, per_micro)`: every micro-batch of `batch` through `model`, the layers
    pipelined over the mesh's "pipeline" axis.

    The model (a CausalLM with stacked layers, `model.scan_layers=True`) embeds all micro-batches
    ([M, rows, T] arrays), its layers run in chunks of L / (stages * chunks) through
    `run_pipeline`, then `per_micro(variables, hidden, micro)` runs on each micro-batch's hidden
    states as the last stage leaves them (before the final norm: per_micro applies the head, as
    logits or in a fused loss; rematerialised). Returns the per_micro outputs stacked over M.
    `param_shardings` are the compute-copy shardings of `params`; the stacked layer weights are
    split into stages from them.
    Differentiable: the gradient of a function of the outputs runs the schedule in reverse.
    """
    args = getattr(model, "args", None)
    if args is None or not args.scan_layers or not hasattr(model, "chunk"):
        raise ConfigError(
            "pipeline parallelism needs an InternLM-family model with stacked layers: set "
            "model.scan_layers=True.",
            key="model.scan_layers",
        )
    stages = mesh.shape[PIPELINE]
    chunk = model.chunk(args.num_layers // (stages * chunks))

    def pin_state(x):
        return nn.with_logical_constraint(x, ACT_PIPELINE_STATE[: x.ndim])

    def pin_params(tree):
        def pin(p, sharding):
            spec = PartitionSpec(PIPELINE, None, None, *tuple(sharding.spec)[1:])
            return jax.lax.with_sharding_constraint(p, NamedSharding(mesh, spec))

        return jax.tree.map(pin, tree, param_shardings["layers"])

    def stage_fn(layer_params, x, side):
        variables = {"params": {"layers": layer_params}}
        return chunk.apply(variables, x, side["positions"], side["segment_ids"], method="stage")

    def forward(params, batch: dict, per_micro: Callable[[dict, jax.Array, dict], Any]):
        variables = {"params": params}
        x = model.apply(variables, batch["input_ids"], method="embed")
        side = {"positions": batch["positions"], "segment_ids": batch["segment_ids"]}
        schedule = PipelineSchedule(stages, x.shape[0], chunks)
        logger.info(schedule.describe())  # once per compilation: the bubble this layout pays
        hidden = run_pipeline(
            stage_fn, params["layers"], x, side, schedule, pin_state=pin_state, pin_params=pin_params
        )

        def head(item):
            h, micro = item
            return per_micro(variables, h, micro)

        return jax.lax.map(jax.checkpoint(head), (hidden, batch))

    return forward
