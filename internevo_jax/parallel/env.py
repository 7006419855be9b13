"""The parallel environment of a run: mesh, sizes and rules, and the context the model traces in."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh

from internevo_jax.config import Config, ParallelSizes, parallel_sizes
from internevo_jax.parallel.mesh import build_mesh, local_dp_ranks
from internevo_jax.parallel.rules import logical_axis_rules


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules, matmul_precision: str | None = None) -> Iterator[None]:
    """Trace under `mesh` with the logical-axis `rules` (flax applies its constraints only then)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), jax.default_matmul_precision(matmul_precision):
        yield


@dataclasses.dataclass(frozen=True)
class ParallelEnv:
    """The mesh a run lives on, the parallel sizes behind it and the logical-axis rules."""

    mesh: Mesh
    sizes: ParallelSizes
    rules: tuple

    @property
    def dp_ranks(self) -> list[int]:
        """Data-parallel ranks whose batch rows this process feeds."""
        return local_dp_ranks(self.mesh)


def parallel_env(cfg: Config, devices: Sequence[jax.Device] | None = None) -> ParallelEnv:
    """Build the mesh from the `parallel` dict over `devices` (default: all devices of the job)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = parallel_sizes(cfg, len(devices))
    return ParallelEnv(build_mesh(sizes, devices), sizes, logical_axis_rules(cfg))
