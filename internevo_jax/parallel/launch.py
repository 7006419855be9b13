"""Multi-process start-up: jax.distributed from slurm, torchrun-style variables or TPU metadata."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
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


def _int_var(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment variable {name}={value!r} is not an integer.") from None


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

    slurm: SLURM_PROCID, SLURM_NTASKS, and the first host of SLURM_NODELIST (or
    SLURM_LAUNCH_NODE_IPADDR) as coordinator. torch: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    (what torchrun and most schedulers' PyTorch integrations export). tpu: everything from the
    TPU VM metadata. Explicit `rank`/`world_size`/`host` (manual launches) win over the environment.
    """
    env = os.environ if env is None else env
    if launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher={launcher!r} is not one of {', '.join(LAUNCHERS)}.")
    if launcher == "tpu":
        return LaunchInfo("tpu", -1, -1, None)
    if launcher == "slurm":
        env_rank, env_world = _int_var(env, "SLURM_PROCID"), _int_var(env, "SLURM_NTASKS")
        env_host = env.get("SLURM_LAUNCH_NODE_IPADDR") or (
            _slurm_first_host(env["SLURM_NODELIST"]) if env.get("SLURM_NODELIST") else None
        )
    elif launcher == "torch":
        env_rank, env_world = _int_var(env, "RANK"), _int_var(env, "WORLD_SIZE")
        env_host = env.get("MASTER_ADDR")
        port = _int_var(env, "MASTER_PORT") or port
    else:
        env_rank, env_world, env_host = None, None, None
    rank = rank if rank is not None else env_rank if env_rank is not None else 0
    world_size = world_size if world_size is not None else env_world if env_world is not None else 1
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


def _enable_cpu_collectives() -> None:
    # CPU devices of different processes only talk through gloo; it must be chosen before the
    # CPU backend starts. GPU/TPU runs are unaffected (the setting only concerns the CPU client).
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _startup_failed(who: str, timeout_s: int, cause: str) -> str:
    return (
        f"distributed start-up failed for {who} after waiting up to {timeout_s} s "
        "(--distributed-timeout): not every process joined, or the coordinator cannot be reached. "
        "Start all processes with the same --launcher, coordinator address and world size, and check "
        f"that the coordinator's port is open. {cause}"
    )


def _watchdog(message: str, timeout_s: int) -> threading.Timer:
    # jax aborts the process from C++ (SIGABRT, a stack trace and no hint) when a peer never
    # joins; exit first, on every process that did start, with a message that says what happened.
    def fire():
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def initialize_distributed(info: LaunchInfo, *, timeout_s: int = 300) -> LaunchInfo:
    """Call jax.distributed.initialize when the job has more than one process.

    Every process waits at most `timeout_s` seconds for all others to join. When one is missing,
    each process that did start prints a one-paragraph error and exits with status 2 (jax would
    otherwise abort it later with a C++ stack trace); other start-up failures raise LaunchError.
    """
    if info.launcher != "tpu" and info.num_processes <= 1:
        return info
    _enable_cpu_collectives()
    if info.launcher == "tpu":
        who = "this TPU VM"
    else:
        who = f"process {info.process_id} of {info.num_processes} (coordinator {info.coordinator})"
    timer = _watchdog(_startup_failed(who, timeout_s, "Timed out."), timeout_s)
    # jax's own deadline lies behind the watchdog's, so the clear message always comes first.
    jax_timeout = timeout_s + 30
    try:
        if info.launcher == "tpu":
            jax.distributed.initialize(initialization_timeout=jax_timeout)
            info = LaunchInfo("tpu", jax.process_index(), jax.process_count(), None)
        else:
            jax.distributed.initialize(
                coordinator_address=info.coordinator,
                num_processes=info.num_processes,
                process_id=info.process_id,
                initialization_timeout=jax_timeout,
            )
    except Exception as err:  # noqa: BLE001 - jax raises backend-specific error types here
        raise LaunchError(
            _startup_failed(who, timeout_s, f"Cause: {str(err).splitlines()[0][:400]}")
        ) from err
    finally:
        timer.cancel()
    return info
