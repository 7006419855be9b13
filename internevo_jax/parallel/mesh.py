"""The named device mesh built from the `parallel` dict."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from internevo_jax.config import ParallelSizes
from internevo_jax.names import BATCH_AXES, MESH_AXES


def split_over_hosts(shape: Sequence[int], hosts: int) -> tuple[list[int], list[int]] | None:
    """Split a mesh shape into (per-host shape, across-host shape), hosts on the outer axes.

    The hosts are spread over the outermost axes first ("pipeline", then "data", "expert", "fsdp"),
    so "tensor" stays inside a host whenever the sizes allow. None when they do not divide.
    """
    inner, outer, left = list(shape), [1] * len(shape), hosts
    for i, size in enumerate(shape):
        take = math.gcd(size, left)
        outer[i], inner[i] = take, size // take
        left //= take
    return (inner, outer) if left == 1 else None


def _topology_grid(shape, devices):
    """jax's topology-aware placement, or None where it does not apply."""
    try:
        return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except Exception:  # noqa: BLE001 - unknown topologies: id order below is still correct
        return None


def _hybrid_grid(shape, devices, granules: int, by_process: bool):
    """Inner axes within a granule (host or TPU slice), outer axes across granules, or None."""
    split = split_over_hosts(shape, granules)
    if split is None or len(devices) % granules:
        return None
    inner, outer = split
    try:
        return mesh_utils.create_hybrid_device_mesh(inner, outer, devices, process_is_granule=by_process)
    except Exception:  # noqa: BLE001 - e.g. uneven devices per host: id order below is still correct
        return None


def device_grid(shape: Sequence[int], devices: Sequence[jax.Device]) -> np.ndarray:
    """Devices arranged in `shape` so that the inner axes use the fastest links.

    TPU: topology-aware placement within a slice (jax's mesh_utils), slices on the outer axes.
    GPU: within a host the NVLink-aware placement, hosts on the outer axes (a hybrid mesh).
    CPU (and any fallback): hosts outer, devices in id order.
    """
    devices = list(devices)
    platform = devices[0].platform
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    hosts = len({d.process_index for d in devices})
    grid = None
    if platform == "tpu":
        grid = _hybrid_grid(shape, devices, slices, False) if slices > 1 else _topology_grid(shape, devices)
    elif hosts > 1:
        grid = _hybrid_grid(shape, devices, hosts, True)
    elif platform == "gpu":
        grid = _topology_grid(shape, devices)
    if grid is None:
        ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
        grid = np.asarray(ordered, dtype=object).reshape(shape)
    return grid


def build_mesh(sizes: ParallelSizes, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Return a Mesh with axes ("pipeline", "data", "expert", "fsdp", "tensor") of the given sizes."""
    devices = list(jax.devices() if devices is None else devices)
    shape = sizes.mesh_shape
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} devices, "
            f"but {len(devices)} are available"
        )
    # Auto axis types: the model only states logical shardings and lets XLA propagate the rest.
    return Mesh(device_grid(shape, devices), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def local_dp_ranks(mesh: Mesh) -> list[int]:
    """Data-parallel ranks (row indices of a batch) whose devices belong to this process.

    A batch row is split over ("data", "expert", "fsdp"), the row-major rank of those indices.
    """
    me = jax.process_index()
    batch_dims = [MESH_AXES.index(axis) for axis in BATCH_AXES]
    batch_shape = [mesh.devices.shape[d] for d in batch_dims]
    ranks = set()
    for idx in np.ndindex(mesh.devices.shape):
        if mesh.devices[idx].process_index == me:
            ranks.add(int(np.ravel_multi_index([idx[d] for d in batch_dims], batch_shape)))
    ordered = sorted(ranks)
    if ordered != list(range(ordered[0], ordered[0] + len(ordered))):
        raise ValueError(f"process {me} owns non-contiguous data-parallel ranks {ordered}")
    return ordered
