"""Running a kernel backend per shard of the mesh.

XLA does not partition a custom kernel call (Triton, Mosaic): handed sharded operands it would
gather them whole onto every device. Kernel backends therefore run inside `jax.shard_map` on the
mesh in context (the step traces under `jax.set_mesh`), split as the logical-axis rules split
q/k/v (names.ACT_HEADS): rows over the batch axes, heads over "tensor", each device running the
kernel on its own rows and heads. Query head h reads kv head h // G, so a device's query heads and
their kv heads stay together when both head counts divide by the tensor size. The pipeline's
stage vmap (`spmd_axis_name="pipeline"`) wraps the shard_map as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec

from internevo_jax.names import ACT_HEADS


def _divides(mesh, axes, *sizes: int) -> bool:
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    n = math.prod(mesh.shape[a] for a in names)
    return all(size % n == 0 for size in sizes)


def kernel_spec(mesh, q_shape, kv_shape, name: str) -> PartitionSpec:
    """The PartitionSpec of q/k/v the kernel runs under (rows and heads split as the rules say).

    A dimension the mesh does not divide (one row at init, fewer kv heads than the tensor size)
    runs replicated: every device computes all of it, as XLA would. Rules that split the sequence
    or head_dim are refused (the kernel needs whole rows): ValueError naming `name`, the backend.
    """
    spec = tuple(nn.logical_to_mesh_axes(ACT_HEADS))
    spec = (*spec, *([None] * (4 - len(spec))))
    if spec[1] is not None or spec[3] is not None:
        raise ValueError(
            f"attention backend {name!r} runs on whole sequences and head dims, but the logical-axis rules "
            f"split q/k/v as {PartitionSpec(*spec)} (batch, sequence, heads, head_dim); keep "
            "activation_heads on the heads dimension (parallel/rules.py) or use model.attn_impl='xla'"
        )
    batch = spec[0] if _divides(mesh, spec[0], q_shape[0]) else None
    heads = spec[2] if _divides(mesh, spec[2], q_shape[2], kv_shape[2]) else None
    return PartitionSpec(batch, None, heads, None)


def run_sharded(kernel: Callable, q, k, v, segment_ids, *, name: str):
    """`kernel(q, k, v, segment_ids)` per shard of the mesh in context (as it is without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return kernel(q, k, v, segment_ids)
    spec = kernel_spec(mesh, q.shape, k.shape, name)
    if segment_ids is None:
        body, args, in_specs = (lambda q, k, v: kernel(q, k, v, None)), (q, k, v), (spec, spec, spec)
    else:
        body, args = kernel, (q, k, v, segment_ids)
        in_specs = (spec, spec, spec, PartitionSpec(spec[0], None))
    # check_vma=False: the kernel call carries no varying-axes annotations of its own.
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)(*args)
