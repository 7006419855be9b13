"""The named device mesh built from the `parallel` dict."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from internevo_jax.config import ParallelSizes

# Order matters: the last axis varies fastest over the device list, so "tensor" lands on
# neighbouring devices (same host / ICI ring) where its frequent collectives are cheapest.
MESH_AXES = ("pipeline", "data", "fsdp", "tensor")


def build_mesh(sizes: ParallelSizes, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Return a Mesh with axes ("pipeline", "data", "fsdp", "tensor") of the given sizes."""
    devices = list(jax.devices() if devices is None else devices)
    shape = (sizes.pipeline, sizes.data, sizes.fsdp, sizes.tensor)
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} devices, "
            f"but {len(devices)} are available"
        )
    # Auto axis types: the model only states logical shardings and lets XLA propagate the rest.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def local_dp_ranks(mesh: Mesh) -> list[int]:
    """Data-parallel ranks (row indices of a batch) whose devices belong to this process.

    A batch row is split over ("data", "fsdp"); rank = data_index * fsdp_size + fsdp_index.
    """
    me = jax.process_index()
    fsdp = mesh.shape["fsdp"]
    ranks = set()
    for idx in np.ndindex(mesh.devices.shape):
        if mesh.devices[idx].process_index == me:
            _, data_i, fsdp_i, _ = idx
            ranks.add(data_i * fsdp + fsdp_i)
    ordered = sorted(ranks)
    if ordered != list(range(ordered[0], ordered[0] + len(ordered))):
        raise ValueError(f"process {me} owns non-contiguous data-parallel ranks {ordered}")
    return ordered
