"""Mesh construction, logical-axis rules and multi-process launch."""

from internevo_jax.parallel.launch import (
    LAUNCHERS,
    LaunchError,
    LaunchInfo,
    initialize_distributed,
    resolve_launch,
)
from internevo_jax.parallel.mesh import MESH_AXES, build_mesh, local_dp_ranks
from internevo_jax.parallel.rules import (
    batch_sharding,
    logical_axis_rules,
    put_batch,
    replicated,
    shardings_for,
)

__all__ = [
    "MESH_AXES",
    "LAUNCHERS",
    "LaunchError",
    "LaunchInfo",
    "resolve_launch",
    "put_batch",
    "batch_sharding",
    "build_mesh",
    "local_dp_ranks",
    "initialize_distributed",
    "logical_axis_rules",
    "replicated",
    "shardings_for",
]
