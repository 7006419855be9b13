"""The mixture-of-experts feed-forward layer, usable in place of the dense MLP of any family.

out = sum over the token's kept choices of weight * expert(x)   (routed experts)
      mixed with shared experts when there are any (`MoEArgs.shared_mix`).

The router and the routed experts run per device inside `shard_map` when the model traces under
a mesh: each device routes its own rows, and with an "expert" axis > 1 its tokens travel to
their experts' devices by all-to-all (experts.py). Without a mesh (a single device, conversion
tools) the same code runs on all rows at once.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.layers import ACTIVATIONS, FeedForward, dense, normal_init, out_proj_init
from internevo_jax.model.moe.experts import expert_parallel_experts, local_experts
from internevo_jax.model.moe.grouped_matmul import DEFAULT_TILE, choose_grouped_matmul
from internevo_jax.model.moe.routing import route
from internevo_jax.names import BATCH_AXES, EMBED, EXPERT, EXPERT_MLP, EXPERTS, ROUTER, TENSOR

MOE_COLLECTION = "moe"  # the sown routing statistics of every MoE layer (trainer/moe_loss.py reads them)


def _tile_for(assignments: int, experts: int) -> int:
    """Rows per tile of the grouped matmul: at most the mean group size (so padding at most doubles
    the work), a power of two between 8 and DEFAULT_TILE."""
    mean = max(1, assignments // experts)
    return max(8, min(DEFAULT_TILE, 1 << (mean.bit_length() - 1)))


def _expert_tensor_axis() -> str | None:
    """The mesh axis the expert MLP width is split over under the active rules (or None)."""
    rules = dict(nn.get_logical_axis_rules())
    axis = rules.get(EXPERT_MLP)
    return axis if axis == TENSOR else None


def _device_moe(x, valid, gate, w1, w3, w2, *, args: ModelArgs, mesh_axes: dict, tp_axis: str | None):
    """Router + routed experts on one device's rows: x [R, T, H] -> (out [R, T, H], routing)."""
    moe = args.moe
    rows, tokens, hidden = x.shape
    logits = jnp.einsum("rth,he->rte", x.astype(jnp.float32), gate.astype(jnp.float32))
    routing = route(logits, moe, valid)
    k = moe.top_k
    impl = choose_grouped_matmul(moe.grouped_matmul, args.platform or jax.default_backend())
    flat = dict(
        x=x.reshape(rows * tokens, hidden),
        expert_ids=routing.expert_ids.reshape(-1, k),
        weights=routing.weights.reshape(-1, k),
        kept=routing.kept.reshape(-1, k),
    )
    act = ACTIVATIONS[args.mlp_activation]
    ep = mesh_axes.get(EXPERT, 1)
    local = moe.num_experts // ep
    tile = _tile_for(rows * tokens * k, local)
    weights = (w1.astype(args.dtype), w3.astype(args.dtype), w2.astype(args.dtype))
    if ep > 1:
        capacity = moe.capacity(tokens)
        out = expert_parallel_experts(
            **flat,
            w1=weights[0],
            w3=weights[1],
            w2=weights[2],
            axis=EXPERT,
            axis_size=ep,
            activation=act,
            impl=impl,
            tile=tile,
            max_kept_per_device=None if capacity is None else rows * capacity * local,
        )
    else:
        out = local_experts(
            **flat, w1=weights[0], w3=weights[1], w2=weights[2], activation=act, impl=impl, tile=tile
        )
    if tp_axis is not None and mesh_axes.get(tp_axis, 1) > 1:
        out = jax.lax.psum(out, tp_axis)  # each tensor rank held a slice of every expert's width
    return out.reshape(rows, tokens, hidden).astype(args.dtype), routing


class MoEFeedForward(nn.Module):
    """Router (`gate`, [H, E], no bias, fp32), routed experts (`experts`: w1/w3 [E, H, I], w2
    [E, I, H]), and `num_shared_experts` shared experts as one dense MLP (`shared_experts`) with
    its mixing `coefficient`. Sows its routing statistics into the "moe" collection."""

    args: ModelArgs

    @nn.compact
    def __call__(self, x: jax.Array, layer_idx: Any, valid: jax.Array | None = None) -> jax.Array:
        a, moe = self.args, self.args.moe
        e, h, i = moe.num_experts, x.shape[-1], moe.expert_hidden_size
        gate = self.param("gate", normal_init(moe.router_init_std, (EMBED, ROUTER)), (h, e), a.param_dtype)
        up_init = normal_init(a.ffn_up_init_std, (EXPERTS, EMBED, EXPERT_MLP))
        down_init = out_proj_init(a, a.ffn_down_init_std, layer_idx, (EXPERTS, EXPERT_MLP, EMBED))
        w1 = self.param("w1", up_init, (e, h, i), a.param_dtype)
        w3 = self.param("w3", up_init, (e, h, i), a.param_dtype)
        w2 = self.param("w2", down_init, (e, i, h), a.param_dtype)
        if valid is None:
            valid = jnp.ones(x.shape[:2], bool)

        mesh = jax.sharding.get_abstract_mesh()
        mesh_axes = dict(mesh.shape) if not mesh.empty else {}
        if mesh_axes and x.shape[0] % math.prod(mesh_axes.get(axis, 1) for axis in BATCH_AXES):
            # Fewer rows than data-parallel ranks (the one-row shape batch of parameter init): the
            # same maths on the whole batch, placed by XLA.
            mesh_axes = {}
        tp_axis = _expert_tensor_axis() if mesh_axes else None
        run = functools.partial(_device_moe, args=a, mesh_axes=mesh_axes, tp_axis=tp_axis)
        if mesh_axes:
            rows = P(BATCH_AXES)
            up_spec, down_spec = P(EXPERT, None, tp_axis), P(EXPERT, tp_axis, None)
            run = jax.shard_map(
                run,
                in_specs=(rows, rows, P(), up_spec, up_spec, down_spec),
                out_specs=(rows, rows),
                check_vma=False,
            )
        out, routing = run(x, valid, gate, w1, w3, w2)
        self.sow(MOE_COLLECTION, "routing", routing)

        if moe.num_shared_experts:
            shared_args = a.replace_mlp(moe.shared_hidden_size)
            shared = FeedForward(shared_args, name="shared_experts")(x, layer_idx)
            coef_init = normal_init(moe.router_init_std, (EMBED, None))
            if moe.shared_mix == "sigmoid":
                c = dense(a, 1, coef_init, use_bias=False, bias_name=None, name="coefficient")(x)
                out = out + jax.nn.sigmoid(c.astype(jnp.float32)).astype(a.dtype) * shared
            else:
                c = dense(a, 2, coef_init, use_bias=True, bias_name=None, name="coefficient")(x)
                c = jax.nn.softmax(c.astype(jnp.float32), axis=-1)
                out = (out * c[..., :1] + shared * c[..., 1:]).astype(a.dtype)
        return out
