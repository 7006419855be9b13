"""The routed experts' computation: tokens sorted by expert through grouped matmuls, on one
device or spread over the "expert" mesh axis by all-to-all.

All functions here run on one device's tokens (inside `shard_map` when there is a mesh): x [N, H],
the routing of each token's k choices, and this device's experts' weights.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from internevo_jax.model.moe.grouped_matmul import grouped_matmul


def expert_mlp(
    xs: jax.Array, group_sizes: jax.Array, w1, w3, w2, activation: Callable, impl: str, tile: int
) -> jax.Array:
    """Gated MLP of every expert on its rows: w2(act(x w1) * (x w3)); xs sorted by expert."""
    gate = grouped_matmul(xs, w1, group_sizes, impl=impl, tile=tile)
    up = grouped_matmul(xs, w3, group_sizes, impl=impl, tile=tile)
    return grouped_matmul(activation(gate) * up, w2, group_sizes, impl=impl, tile=tile)


def _sorted_by_key(key: jax.Array):
    order = jnp.argsort(key, stable=True)
    return order, key[order]


def local_experts(x, expert_ids, weights, kept, w1, w3, w2, *, activation, impl, tile):
    """Every expert on this device: x [N, H], expert_ids / weights / kept [N, k] -> [N, H] (fp32).

    Dropped choices sort after every expert and get no rows in any group: no work, zero output.
    """
    n, k = expert_ids.shape
    experts = w1.shape[0]
    key = jnp.where(kept, expert_ids, experts).reshape(-1)
    order, sorted_key = _sorted_by_key(key)
    sizes = jnp.zeros(experts + 1, jnp.int32).at[sorted_key].add(1)[:experts]
    ys = expert_mlp(x[order // k], sizes, w1, w3, w2, activation, impl, tile)
    y = jnp.zeros_like(ys).at[order].set(ys).reshape(n, k, -1)
    return jnp.einsum("nk,nkh->nh", weights, y.astype(jnp.float32))


def expert_parallel_experts(
    x,
    expert_ids,
    weights,
    kept,
    w1,
    w3,
    w2,
    *,
    axis: str,
    axis_size: int,
    activation,
    impl,
    tile,
    max_kept_per_device: int | None = None,
):
    """The experts spread over mesh axis `axis` (`axis_size` devices, E / axis_size each): this
    device's tokens go to their experts' devices by one all-to-all and come back by another.

    Each device sends every other device a buffer of static size: N * min(k, E_local) rows (no
    token can send more choices there), or `max_kept_per_device` when the routing bounds it
    (GShard: rows x capacity x E_local), so no kept choice is ever lost on the way.
    """
    n, k = expert_ids.shape
    local = w1.shape[0]
    slots = n * min(k, local)
    if max_kept_per_device is not None:
        slots = min(slots, max_kept_per_device)
    # Sort this device's choices by (destination device, expert); dropped ones last.
    key = jnp.where(kept, expert_ids, local * axis_size).reshape(-1)
    order, sorted_key = _sorted_by_key(key)
    dest = sorted_key // local  # == axis_size for dropped choices
    per_dest = jnp.zeros(axis_size + 1, jnp.int32).at[dest].add(1)
    start = jnp.cumsum(per_dest) - per_dest
    slot = jnp.arange(n * k, dtype=jnp.int32) - start[dest]
    send_x = jnp.zeros((axis_size, slots, x.shape[1]), x.dtype).at[dest, slot].set(x[order // k], mode="drop")
    send_e = (
        jnp.full((axis_size, slots), local, jnp.int32).at[dest, slot].set(sorted_key % local, mode="drop")
    )
    recv_x = jax.lax.all_to_all(send_x, axis, 0, 0, tiled=True).reshape(axis_size * slots, -1)
    recv_e = jax.lax.all_to_all(send_e, axis, 0, 0, tiled=True).reshape(-1)
    # This device's experts on what it received (padding rows: key `local`, sorted last, no group).
    r_order, r_key = _sorted_by_key(recv_e)
    sizes = jnp.zeros(local + 1, jnp.int32).at[r_key].add(1)[:local]
    ys = expert_mlp(recv_x[r_order], sizes, w1, w3, w2, activation, impl, tile)
    out = jnp.zeros_like(ys).at[r_order].set(ys).reshape(axis_size, slots, -1)
    back = jax.lax.all_to_all(out, axis, 0, 0, tiled=True)
    y_sorted = back.at[dest, slot].get(mode="fill", fill_value=0)
    y = jnp.zeros_like(y_sorted).at[order].set(y_sorted).reshape(n, k, -1)
    return jnp.einsum("nk,nkh->nh", weights, y.astype(jnp.float32))
