"""Grouped matmul: rows sorted by expert times that expert's weight matrix, for every expert at once.

Two implementations, in the order "auto" tries them (`choose_grouped_matmul`):

* "ragged_dot": `jax.lax.ragged_dot`. On TPU XLA lowers it to a grouped kernel. On CPU (and, as of
  jax 0.10, GPU) XLA expands it into one dense matmul of every row against every expert, E times
  the work of the rows' own experts (measured on CPU: benchmarks/bench_moe.py), so "auto" uses it
  on TPU only.
* "tiled": rows are laid out so that every group starts on a tile boundary; each tile of `tile`
  rows then belongs to one expert and is multiplied by that expert's matrix alone, in a scan over
  tiles. The work is that of the rows' own experts plus at most one partial tile per expert.
  Its gradient is written by hand (`jax.custom_vjp`): autodiff of the scan would add a
  zeros-like copy of every expert's weights per tile; here the weight gradient accumulates tile by
  tile in place.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

GROUPED_MATMULS = ("ragged_dot", "tiled")
DEFAULT_TILE = 128


def choose_grouped_matmul(requested: str, platform: str | None) -> str:
    """The implementation for `requested` ("auto" or one of GROUPED_MATMULS) on `platform`."""
    if requested == "auto":
        return "ragged_dot" if platform == "tpu" else "tiled"
    if requested not in GROUPED_MATMULS:
        raise ValueError(
            f"grouped matmul {requested!r} is not one of {('auto', *GROUPED_MATMULS)} "
            "(model.moe_layer_kwargs.grouped_matmul)"
        )
    return requested


def grouped_matmul(
    x: jax.Array, w: jax.Array, group_sizes: jax.Array, *, impl: str = "tiled", tile: int = DEFAULT_TILE
) -> jax.Array:
    """x [M, K] (rows sorted by group), w [G, K, N], group_sizes [G] (sum <= M) -> [M, N].

    Row r of group g gets x[r] @ w[g]; rows past sum(group_sizes) get zeros.
    """
    if impl == "ragged_dot":
        return jax.lax.ragged_dot(x, w, jnp.asarray(group_sizes, jnp.int32))
    if impl != "tiled":
        raise ValueError(f"grouped matmul {impl!r} is not one of {GROUPED_MATMULS}")
    tile = max(1, min(tile, x.shape[0]))
    return _tiled(jnp.asarray(x), jnp.asarray(w), jnp.asarray(group_sizes, jnp.int32), tile)


def _tile_layout(group_sizes: jax.Array, rows: int, tile: int):
    """(source row of each padded row or `rows` for padding [P], group of each tile [P / tile],
    the number of tiles in use).

    Group g occupies ceil(size_g / tile) whole tiles; P = tile * (ceil(rows / tile) + G) bounds
    the padded rows for any sizes summing to at most `rows`. Tiles past the used ones are skipped.
    """
    groups = group_sizes.shape[0]
    num_tiles = -(-rows // tile) + groups
    padded = -(-group_sizes // tile) * tile
    padded_end = jnp.cumsum(padded)
    padded_start = padded_end - padded
    start = jnp.cumsum(group_sizes) - group_sizes
    p = jnp.arange(num_tiles * tile, dtype=jnp.int32)
    g = jnp.minimum(jnp.searchsorted(padded_end, p, side="right"), groups - 1)
    offset = p - padded_start[g]
    valid = (offset < group_sizes[g]) & (p < padded_end[-1])
    source = jnp.where(valid, start[g] + offset, rows)
    return source, g[::tile], padded_end[-1] // tile


def _gather_rows(x: jax.Array, source: jax.Array) -> jax.Array:
    padded = jnp.concatenate([x, jnp.zeros((1, x.shape[1]), x.dtype)])
    return padded[source]


def _scatter_rows(y: jax.Array, source: jax.Array, rows: int) -> jax.Array:
    return jnp.zeros((rows, y.shape[1]), y.dtype).at[source].set(y, mode="drop")


def _tile_products(
    xp: jax.Array, w: jax.Array, tile_group: jax.Array, used: jax.Array, tile: int
) -> jax.Array:
    """[P, K] padded rows -> [P, N]: each used tile times its group's matrix (unused tiles: 0)."""
    num_tiles = tile_group.shape[0]
    tiles = xp.reshape(num_tiles, tile, xp.shape[1])
    zeros = jnp.zeros((tile, w.shape[2]), xp.dtype)

    def one(_, args):
        xt, g, i = args
        product = lambda: jnp.dot(xt, w[g], preferred_element_type=jnp.float32).astype(xp.dtype)  # noqa: E731
        return None, jax.lax.cond(i < used, product, lambda: zeros)

    _, out = jax.lax.scan(one, None, (tiles, tile_group, jnp.arange(num_tiles)))
    return out.reshape(num_tiles * tile, w.shape[2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _tiled(x, w, group_sizes, tile):
    source, tile_group, used = _tile_layout(group_sizes, x.shape[0], tile)
    yp = _tile_products(_gather_rows(x, source), w, tile_group, used, tile)
    return _scatter_rows(yp, source, x.shape[0])


def _tiled_fwd(x, w, group_sizes, tile):
    return _tiled(x, w, group_sizes, tile), (x, w, group_sizes)


def _tiled_bwd(tile, residuals, dy):
    x, w, group_sizes = residuals
    source, tile_group, used = _tile_layout(group_sizes, x.shape[0], tile)
    num_tiles = tile_group.shape[0]
    dyp = _gather_rows(dy, source)
    # dx: the same grouped product with every matrix transposed.
    dxp = _tile_products(dyp, jnp.swapaxes(w, 1, 2), tile_group, used, tile)
    dx = _scatter_rows(dxp, source, x.shape[0])
    xp = _gather_rows(x, source).reshape(num_tiles, tile, x.shape[1])
    dyt = dyp.reshape(num_tiles, tile, dy.shape[1])

    def accumulate(dw, args):
        xt, dt, g, i = args
        add = lambda dw: dw.at[g].add(jnp.dot(xt.T, dt, preferred_element_type=jnp.float32))  # noqa: E731
        return jax.lax.cond(i < used, add, lambda dw: dw, dw), None

    dw, _ = jax.lax.scan(
        accumulate, jnp.zeros(w.shape, jnp.float32), (xp, dyt, tile_group, jnp.arange(num_tiles))
    )
    zero_sizes = jnp.zeros(group_sizes.shape, jax.dtypes.float0)
    return dx.astype(x.dtype), dw.astype(w.dtype), zero_sizes


_tiled.defvjp(_tiled_fwd, _tiled_bwd)
