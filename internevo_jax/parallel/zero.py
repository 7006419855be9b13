"""ZeRO-1 / FSDP: the compute copy of the parameters, made from the sharded fp32 master copy.

The train state holds fp32 master parameters sharded over "fsdp" (`master_axis_rules`). Inside
the step each parameter is cast to the dtype the layer computes in and constrained to its compute
sharding: under ZeRO-1 that is replicated over "fsdp", so XLA all-gathers in the compute dtype;
under FSDP it stays sharded and XLA gathers where the layers need it. The gradient takes the way
back: constrained to the master sharding in the compute dtype (a reduce-scatter over the batch
axes), then cast to fp32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from internevo_jax.names import EXPERT_WEIGHT_NAMES, FSDP
from internevo_jax.parallel.rules import params_sharded_for_compute


def _drop_axis(spec: PartitionSpec, axis: str) -> PartitionSpec:
    """`spec` without the dimensions split over `axis`: a dimension split over a group containing
    it (an MoE model's ZeRO group "expert" x "fsdp") is left whole too."""
    return PartitionSpec(
        *(None if entry == axis or (isinstance(entry, tuple) and axis in entry) else entry for entry in spec)
    )


def compute_shardings(master_shardings, rules):
    """Shardings of the compute copy: the master's, without "fsdp" unless the weights are FSDP."""
    if params_sharded_for_compute(rules):
        return master_shardings
    return jax.tree.map(lambda s: NamedSharding(s.mesh, _drop_axis(s.spec, FSDP)), master_shardings)


def compute_dtypes(params, args: Any):
    """Per-leaf dtype the layers compute in, or None to keep fp32.

    Only leaves the model itself casts before use are cast here, so the numerics are unchanged:
    matmul kernels and MoE expert weights (to the compute dtype) and the embedding table (to the residual dtype, which
    is what its looked-up rows become). Norm weights and biases are small and stay fp32.
    """
    if args is None:
        return jax.tree.map(lambda _: None, params)

    def pick(path, _):
        name = getattr(path[-1], "key", None)
        if name == "kernel" or name in EXPERT_WEIGHT_NAMES:
            return args.dtype
        if name == "embedding":
            return args.residual_dtype
        return None

    return jax.tree_util.tree_map_with_path(pick, params)


def reduce_layouts(params, compute, master):
    """Per leaf, the sharding its gradient is reduced into before it reaches the master layout.

    Matmul weights reduce straight into the master layout (a reduce-scatter). The embedding
    table's gradient is a scatter-add of batch-sharded rows; asking for the master layout there
    makes XLA reshard the rows instead, so it is reduced in the compute layout and then sliced.
    """

    def pick(path, c, m):
        return c if getattr(path[-1], "key", None) == "embedding" else m

    return jax.tree_util.tree_map_with_path(pick, compute, master)


def _gather(x: jax.Array, dtype, compute: NamedSharding, master: NamedSharding, reduce: NamedSharding):
    dtype = x.dtype if dtype is None else jnp.dtype(dtype)

    @jax.custom_vjp
    def gather(p):
        # Pin the cast to the master layout, or propagation moves it after the gather and the
        # all-gather runs in fp32.
        narrow = jax.lax.with_sharding_constraint(p.astype(dtype), master)
        return jax.lax.with_sharding_constraint(narrow, compute)

    def fwd(p):
        return gather(p), None

    def bwd(_, g):
        # Reduce into the master layout before widening: a reduce-scatter in the compute dtype.
        return (jax.lax.with_sharding_constraint(g, reduce).astype(x.dtype),)

    gather.defvjp(fwd, bwd)
    return gather(x)


def compute_copy(params, dtypes, compute, master, reduce):
    """The parameters as the layers use them (see the module docstring); differentiable.

    `dtypes` from `compute_dtypes`, `compute` from `compute_shardings`, `master` the train
    state's parameter shardings, `reduce` from `reduce_layouts`.
    """
    return jax.tree.map(_gather, params, dtypes, compute, master, reduce)
