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


def _present(patterns: tuple[str, ...]) -> bool:
    return any(glob.glob(p) for p in patterns)


def configure_host_platforms() -> None:
    """Apply the rules of the module docstring to this process's environment."""
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
