"""Running a kernel backend per shard of the mesh.

XLA cannot split a custom kernel call (Triton, Mosaic) across devices: handed sharded operands
it would gather them whole onto every device. Kernel backends therefore run inside `shard_map`
on the mesh the step is traced under: rows split as the rules table splits the activation batch,
query and kv heads as it splits the heads, each row's sequence whole (attention needs every key).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec

from internevo_jax.names import ACT_HEADS


def _size(mesh, axes) -> int:
    if axes is None:
        return 1
    names = axes if isinstance(axes, tuple) else (axes,)
    size = 1
    for name in names:
        size *= mesh.shape[name]
    return size


def run_sharded(kernel: Callable, q, k, v, segment_ids, *, name: str):
    """`kernel(q, k, v, segment_ids)` per shard of the context mesh (plainly without a mesh).

    ValueError (naming `name`, the backend) when the heads do not split evenly: query head h reads
    kv head h // G on its own device only if both head counts divide by the tensor size.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return kernel(q, k, v, segment_ids)
    batch, _, heads, _ = nn.logical_to_mesh_axes(ACT_HEADS)
    rows, tp = _size(mesh, batch), _size(mesh, heads)
    if q.shape[0] % rows:
        batch, rows = None, 1  # e.g. a single row at generation time: every device takes it whole
    if q.shape[2] % tp or k.shape[2] % tp:
        raise ValueError(
            f"attention backend {name!r} splits heads over the tensor axis ({tp}): query heads "
            f"({q.shape[2]}) and kv heads ({k.shape[2]}) must both divide by it; choose a tensor size "
            "that divides num_kv_attention_heads, or model.attn_impl='xla'"
        )
    heads_spec = PartitionSpec(batch, None, heads, None)
    seg_spec = None if segment_ids is None else PartitionSpec(batch, None)
    # check_vma=False: the kernel's outputs are per-shard by construction (no collectives inside).
    return jax.shard_map(
        kernel,
        mesh=mesh,
        in_specs=(heads_spec, heads_spec, heads_spec, seg_spec),
        out_specs=heads_spec,
        check_vma=False,
    )(q, k, v, segment_ids)
