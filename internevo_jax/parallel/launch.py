"""Multi-process start-up: jax.distributed from slurm, torchrun-style variables or TPU metadata."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import jax

LAUNCHERS = ("slurm", "torch", "tpu", "local")


@dataclasses.dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in the job."""

    launcher: str
    process_id: int
    num_processes: int
    coordinator: str | None


class LaunchError(RuntimeError):
    """A launch that cannot work as configured; the message says what to set."""


def _slurm_first_host(nodelist: str) -> str:
    # "node[01-04,07],other" -> "node01": enough to find the coordinator without scontrol.
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        first = rest.split(",")[0].split("-")[0].rstrip("]")
        return prefix + first
    return head


def resolve_launch(
    launcher: str,
    *,
    host: str | None = None,
    port: int = 8888,
    rank: int | None = None,
    world_size: int | None = None,
    env: Mapping[str, str] | None = None,
) -> LaunchInfo:
    """Work out process id, process count and coordinator address for `launcher`.

    Explicit `rank`/`world_size`/`host` (manual launches) win over the environment.
    """
    env = os.environ if env is None else env
    if launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher={launcher!r} is not one of {', '.join(LAUNCHERS)}.")
    if launcher == "tpu":
        return LaunchInfo("tpu", -1, -1, None)
    if launcher == "slurm":
        env_rank, env_world = env.get("SLURM_PROCID"), env.get("SLURM_NTASKS")
        env_host = env.get("SLURM_LAUNCH_NODE_IPADDR") or (
            _slurm_first_host(env["SLURM_NODELIST"]) if "SLURM_NODELIST" in env else None
        )
    elif launcher == "torch":
        env_rank, env_world = env.get("RANK"), env.get("WORLD_SIZE")
        env_host = env.get("MASTER_ADDR")
        port = int(env.get("MASTER_PORT", port))
    else:
        env_rank, env_world, env_host = None, None, None
    rank = rank if rank is not None else int(env_rank) if env_rank is not None else 0
    world_size = world_size if world_size is not None else int(env_world) if env_world is not None else 1
    host = host or env_host
    if world_size < 1 or not 0 <= rank < world_size:
        raise LaunchError(f"rank {rank} is not inside world size {world_size}; check --rank/--world_size.")
    if world_size > 1 and not host:
        raise LaunchError(
            f"{world_size} processes need a coordinator address: pass --host (and --port), or set "
            "MASTER_ADDR for --launcher=torch / run under srun for --launcher=slurm."
        )
    coordinator = f"{host}:{port}" if world_size > 1 else None
    return LaunchInfo(launcher, rank, world_size, coordinator)


def initialize_distributed(info: LaunchInfo, *, timeout_s: int = 300) -> LaunchInfo:
    """Call jax.distributed.initialize when the job has more than one process."""
    if info.launcher == "tpu":
        jax.distributed.initialize(initialization_timeout=timeout_s)
        return LaunchInfo("tpu", jax.process_index(), jax.process_count(), None)
    if info.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=info.coordinator,
            num_processes=info.num_processes,
            process_id=info.process_id,
            initialization_timeout=timeout_s,
        )
    return info
