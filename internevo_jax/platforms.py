"""What jax starts on this host, settled once when the package is imported (before any backend).

libtpu (the `tpu` and `test` extras: TPU topology compiles, docs/parallel.md) makes jax try the TPU
runtime first at every start. On a host without TPU chips that try fails: jax stays quiet, but
libtpu prints its failed host discovery to stderr, maps ~200 MB and takes /tmp/libtpu_lockfile,
and a topology compile starts the same libtpu with the same complaints. So, on such a host:

* libtpu is told it only compiles (`TOPOLOGY_ONLY_LIBTPU_ENV`): quiet, and several processes may
  compile topologies side by side (tests, a dry run next to them);
* with no accelerator at all, jax starts its CPU backend only (JAX_PLATFORMS=cpu), the platform
  it would have picked anyway, without loading libtpu. Topology compiles still work: they load
  libtpu themselves.

On a host with NVIDIA GPUs, XLA gets `GPU_DEFAULT_XLA_FLAGS` unless XLA_FLAGS already names them.
The config's `xla_flags` (docs/performance.md) are added by `apply_xla_flags` when a run starts.

A value the user set wins (`setdefault`; JAX_PLATFORMS set to anything, even "", is left alone).
Standard library only: importing the package must not import jax.
"""

from __future__ import annotations

import glob
import os
import sys

# Device nodes of the accelerators jax drives: NVIDIA (and WSL2), AMD ROCm, TPU (accel up to
# v5e, vfio from v5p). A process that can open none of them can only run jax on CPU.
GPU_NODES = ("/dev/nvidia*", "/dev/dxg", "/dev/kfd")
TPU_NODES = ("/dev/accel*", "/dev/vfio/[0-9]*")

# What libtpu reads about the local host at start-up, for a host without TPU chips.
TOPOLOGY_ONLY_LIBTPU_ENV = {
    "TPU_SKIP_MDS_QUERY": "1",  # not a Cloud TPU VM: no metadata server to ask
    # Any valid type silences the host discovery; it names the host's (absent) chips and does
    # not limit which topology is compiled (v4, v5e, v5p and v6e were checked in one process).
    "TPU_ACCELERATOR_TYPE": "v5litepod-1",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",  # the lockfile guards chips; there are none to guard
}


# Measured on one H100 (a 1.5B InternLM train step, docs/performance.md): XLA's own GEMM emitter
# instead of Triton GEMM fusions, same step time, compile 16 s -> 6 s.
GPU_DEFAULT_XLA_FLAGS = ("--xla_gpu_enable_triton_gemm=false",)


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def add_xla_flags(flags: tuple[str, ...] | list[str], *, keep_existing: bool) -> None:
    """Add `flags` to XLA_FLAGS. keep_existing: a flag XLA_FLAGS already names keeps its value;
    otherwise the new value is put last, which XLA reads last."""
    current = os.environ.get("XLA_FLAGS", "").split()
    named = {_flag_name(f) for f in current}
    if keep_existing:
        new = [f for f in flags if _flag_name(f) not in named]
    else:
        new = list(flags)
        current = [f for f in current if _flag_name(f) not in {_flag_name(x) for x in new}]
    if new:
        os.environ["XLA_FLAGS"] = " ".join([*current, *new])


def _present(patterns: tuple[str, ...]) -> bool:
    return any(glob.glob(p) for p in patterns)


def configure_host_platforms() -> None:
    """Apply the rules of the module docstring to this process's environment."""
    if _present(("/dev/nvidia*",)):
        add_xla_flags(GPU_DEFAULT_XLA_FLAGS, keep_existing=True)
    if _present(TPU_NODES):
        return
    for key, value in TOPOLOGY_ONLY_LIBTPU_ENV.items():
        os.environ.setdefault(key, value)
    if "JAX_PLATFORMS" in os.environ or _present(GPU_NODES):
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    jax = sys.modules.get("jax")
    # jax reads JAX_PLATFORMS when it is imported; if that already happened, tell its config.
    if jax is not None and hasattr(jax, "config") and not jax.config.jax_platforms:
        jax.config.update("jax_platforms", "cpu")


def apply_xla_flags(flags: str | None, *, warn) -> None:
    """Add the config's `xla_flags` (space-separated, as in XLA_FLAGS; they win over the environment's).

    XLA reads its flags when jax starts a backend; if that already happened in this process, the
    flags cannot apply any more and `warn` says so.
    """
    if not flags:
        return
    from jax._src import xla_bridge  # no public query for "has a backend started"

    if xla_bridge.backends_are_initialized():
        warn(
            "xla_flags=%r cannot apply: jax already started its backends in this process. Set them "
            "before the first jax call (or in the XLA_FLAGS environment variable).",
            flags,
        )
        return
    add_xla_flags(flags.split(), keep_existing=False)
