"""Mesh construction, the logical-axis rules table, ZeRO/FSDP compute copies, the pipeline
schedule and multi-process launch (docs/parallel.md)."""

from internevo_jax.parallel.checks import check_layout
from internevo_jax.parallel.env import ParallelEnv, mesh_context, parallel_env
from internevo_jax.parallel.launch import (
    LAUNCHERS,
    LaunchError,
    LaunchInfo,
    initialize_distributed,
    resolve_launch,
)
from internevo_jax.parallel.mesh import build_mesh, local_dp_ranks
from internevo_jax.parallel.pipeline import PipelineSchedule, run_pipeline
from internevo_jax.parallel.rules import (
    LayoutRules,
    batch_sharding,
    logical_axis_rules,
    master_axis_rules,
    put_batch,
    replicated,
    shardings_for,
)
from internevo_jax.parallel.zero import compute_copy, compute_shardings

__all__ = [
    "LAUNCHERS",
    "LaunchError",
    "LaunchInfo",
    "LayoutRules",
    "ParallelEnv",
    "PipelineSchedule",
    "batch_sharding",
    "build_mesh",
    "check_layout",
    "compute_copy",
    "compute_shardings",
    "initialize_distributed",
    "local_dp_ranks",
    "logical_axis_rules",
    "master_axis_rules",
    "mesh_context",
    "parallel_env",
    "put_batch",
    "replicated",
    "resolve_launch",
    "run_pipeline",
    "shardings_for",
]
