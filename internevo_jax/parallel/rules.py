"""The one table that maps the model's logical axis names to mesh axes.

Layers name logical axes only; a parallel layout is a change of this table, never of the model.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from internevo_jax.config import Config

BATCH_AXES = ("data", "fsdp")


def logical_axis_rules(cfg: Config) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """Logical-axis -> mesh-axis rules for the configured parallel layout."""
    # ZeRO-3 / FSDP shards the compute parameters over the zero1 group as well.
    shard_params = cfg.parallel.zero1.fsdp or cfg.parallel.weight.size > 1
    param_fsdp = "fsdp" if shard_params else None
    return (
        # activations
        ("activation_batch", BATCH_AXES),
        ("activation_length", None),
        ("activation_embed", None),
        ("activation_heads", "tensor"),
        ("activation_kv", None),
        ("activation_mlp", "tensor"),
        ("activation_vocab", "tensor"),
        # parameters: Megatron column/row split over "tensor"
        ("vocab", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("embed", param_fsdp),
        ("norm", None),
        ("layers", None),
    )


def shardings_for(logical_specs, mesh: Mesh, rules) -> object:
    """Map a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a [micro_num, rows, length] batch: rows split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: dict, mesh: Mesh, global_rows: int) -> dict:
    """Place this process's rows of a batch onto the mesh as global arrays, rows sharded.

    Each array is [micro_num, local_rows, length]; every process passes only the rows of the
    data-parallel ranks it feeds, so no host ever holds the whole global batch.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in batch.items():
        shape = (value.shape[0], global_rows, *value.shape[2:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
    return out
