"""Our segment-aware flash attention for NVIDIA GPUs, in Pallas (Triton lowering), with its backward.

Why our own kernel: jax's Pallas-Triton attention has segment_ids but loops over every causal
tile of a packed row (so a row of short segments costs as much as one long sequence), repeats
nothing for GQA only because it has no GQA, and is deprecated. Here:

* segment ids, causal, an optional sliding window; grouped kv heads are read through the block
  index map (query head h reads kv head h // G), never repeated in memory; the dk/dv kernel runs
  once per kv head and loops over its G query heads, so no atomics and no [B, T, Hq, D] dk/dv;
* each program loops only over the tiles that hold a visible pair (`tiles.tile_ranges`: causal,
  segment and window bounds per block, computed once per call in XLA), so a packed row costs only
  the work inside its segments; partly visible tiles are masked element-wise;
* the online softmax runs in base 2 (exp2 with log2(e) folded into the scale) in fp32, matmuls
  accumulate in fp32, inputs stay bf16/fp16;
* rows whose length is not a multiple of the block size are padded with a segment id no real
  token has (so padding is never visible to real tokens) and the output sliced back.

Three kernels: forward (per query block: output and the log-sum-exp), dk/dv (per key block and
kv head) and dq (per query block). delta = rowsum(o * do) is a fused XLA reduction.
On CPU the same kernels run in Pallas interpret mode (slow; that is how tests check them).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from internevo_jax.model.attention.base import (
    MASK_VALUE,
    AttentionBackend,
    SupportQuery,
    check_sliding_window,
)
from internevo_jax.model.attention.sharding import run_sharded
from internevo_jax.model.attention.tiles import tile_ranges

LOG2_E = math.log2(math.e)
HEAD_DIMS = (64, 128)
_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
PAD_SEGMENT = jnp.iinfo(jnp.int32).min  # the padding tail's id: no real token has it


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes and Triton launch settings of the three kernels."""

    block_q: int = 128
    block_k: int = 64
    block_q_bwd: int = 64
    block_k_bwd: int = 64
    num_warps: int = 4
    num_warps_bwd: int = 4
    num_stages: int = 2


# Hopper (H100 / H200; 228 KB shared memory per SM): 128-row query tiles keep the tensor cores fed
# in the forward; the backward holds more live tiles (q, do, k, v, dk, dv), so 64 x 64 tiles
# (jax's Pallas kernel measured 2x faster with 64- than with 32-size backward blocks, DESIGN §10).
HOPPER = {64: BlockSizes(128, 64, 64, 64, 4, 4, 3), 128: BlockSizes(128, 64, 64, 64, 8, 4, 3)}
# Ampere (A100, 164 KB) and Ada (L40S / RTX 4090, 100 KB): fewer pipeline stages fit in shared memory.
AMPERE = {64: BlockSizes(128, 64, 64, 64, 4, 4, 2), 128: BlockSizes(64, 64, 64, 32, 4, 4, 2)}


def default_block_sizes(head_dim: int, device_kind: str | None = None) -> BlockSizes:
    """The tuned block sizes for `head_dim` on the GPU named `device_kind` (default: device 0)."""
    if device_kind is None:
        device = jax.devices()[0]
        device_kind = device.device_kind if device.platform == "gpu" else "H100"
    table = (
        HOPPER if any(name in device_kind.upper() for name in ("H100", "H200", "H800", "GH200")) else AMPERE
    )
    return table.get(head_dim, table[128])


def _visible(q_pos, k_pos, q_seg, k_seg, window):
    visible = jnp.logical_and(q_pos[:, None] >= k_pos[None, :], q_seg[:, None] == k_seg[None, :])
    if window is not None:
        visible = jnp.logical_and(visible, q_pos[:, None] - k_pos[None, :] < window)
    return visible


def _forward_kernel(
    q_ref, k_ref, v_ref, seg_ref, lo_ref, hi_ref, o_ref, lse_ref, *count_ref, scale, window, block_k
):
    block_q, head_dim = q_ref.shape
    i = pl.program_id(0)
    q = q_ref[...]
    q_pos = i * block_q + jnp.arange(block_q)
    q_seg = seg_ref[pl.ds(i * block_q, block_q)]

    def body(j, carry):
        acc, m_prev, l_prev, n = carry
        k_slice = pl.ds(j * block_k, block_k)
        s = jnp.dot(q, k_ref[k_slice, :].T, preferred_element_type=jnp.float32) * (scale * LOG2_E)
        k_pos = j * block_k + jnp.arange(block_k)
        s = jnp.where(_visible(q_pos, k_pos, q_seg, seg_ref[k_slice], window), s, MASK_VALUE)
        m_next = jnp.maximum(m_prev, s.max(axis=1))
        correction = jnp.exp2(m_prev - m_next)
        p = jnp.exp2(s - m_next[:, None])
        l_next = l_prev * correction + p.sum(axis=1)
        v = v_ref[k_slice, :]
        acc = acc * correction[:, None] + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, m_next, l_next, n + 1

    init = (
        jnp.zeros((block_q, head_dim), jnp.float32),
        jnp.full((block_q,), -jnp.inf, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
        jnp.int32(0),
    )
    acc, m, total, n = lax.fori_loop(lo_ref[i], hi_ref[i], body, init)
    o_ref[...] = (acc / total[:, None]).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log2(total)
    if count_ref:
        count_ref[0][...] = jnp.full((1,), n, jnp.int32)


def _dkdv_kernel(
    q_ref,
    do_ref,
    lse_ref,
    delta_ref,
    k_ref,
    v_ref,
    seg_ref,
    lo_ref,
    hi_ref,
    dk_ref,
    dv_ref,
    *,
    scale,
    window,
    block_q,
):
    block_k, head_dim = k_ref.shape
    groups = q_ref.shape[1]
    j = pl.program_id(0)
    k, v = k_ref[...], v_ref[...]
    k_pos = j * block_k + jnp.arange(block_k)
    k_seg = seg_ref[pl.ds(j * block_k, block_k)]

    def over_query_blocks(g):
        def body(i, carry):
            dk, dv = carry
            q_slice = pl.ds(i * block_q, block_q)
            q = q_ref[q_slice, g, :]
            do = do_ref[q_slice, g, :]
            s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * (scale * LOG2_E)
            q_pos = i * block_q + jnp.arange(block_q)
            s = jnp.where(_visible(q_pos, k_pos, seg_ref[q_slice], k_seg, window), s, MASK_VALUE)
            p = jnp.exp2(s - lse_ref[g, q_slice][:, None])
            dv = dv + jnp.dot(p.astype(do.dtype).T, do, preferred_element_type=jnp.float32)
            dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
            ds = p * (dp - delta_ref[g, q_slice][:, None])
            dk = dk + jnp.dot(ds.astype(q.dtype).T, q, preferred_element_type=jnp.float32)
            return dk, dv

        return body

    def over_heads(g, carry):
        return lax.fori_loop(lo_ref[j], hi_ref[j], over_query_blocks(g), carry)

    zeros = jnp.zeros((block_k, head_dim), jnp.float32)
    dk, dv = lax.fori_loop(0, groups, over_heads, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(
    q_ref,
    do_ref,
    lse_ref,
    delta_ref,
    k_ref,
    v_ref,
    seg_ref,
    lo_ref,
    hi_ref,
    dq_ref,
    *,
    scale,
    window,
    block_k,
):
    block_q, head_dim = q_ref.shape
    i = pl.program_id(0)
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]
    q_pos = i * block_q + jnp.arange(block_q)
    q_seg = seg_ref[pl.ds(i * block_q, block_q)]

    def body(j, dq):
        k_slice = pl.ds(j * block_k, block_k)
        k = k_ref[k_slice, :]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * (scale * LOG2_E)
        k_pos = j * block_k + jnp.arange(block_k)
        s = jnp.where(_visible(q_pos, k_pos, q_seg, seg_ref[k_slice], window), s, MASK_VALUE)
        p = jnp.exp2(s - lse[:, None])
        dp = jnp.dot(do, v_ref[k_slice, :].T, preferred_element_type=jnp.float32)
        ds = p * (dp - delta[:, None])
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    dq = lax.fori_loop(lo_ref[i], hi_ref[i], body, jnp.zeros((block_q, head_dim), jnp.float32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _params(num_warps: int, num_stages: int):
    return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


# Block specs over the grid (block, row, head) of the kernels.
def _row(n: int):
    """A whole [n] row of a [B, n] array (segment ids, tile ranges)."""
    return pl.BlockSpec((None, n), lambda i, b, h: (b, 0))


def _query_block(block_q: int, head_dim: int):
    """Query block i of head h of a [B, T, Hq, D] array (q, do, o, dq)."""
    return pl.BlockSpec((None, block_q, None, head_dim), lambda i, b, h: (b, i, h, 0))


def _query_stats(block_q: int):
    """Query block i of head h of a [B, Hq, T] row statistic (log-sum-exp, delta)."""
    return pl.BlockSpec((None, None, block_q), lambda i, b, h: (b, h, i))


def _whole_kv(seq_len: int, head_dim: int, groups: int):
    """The whole row of the kv head that query head h reads (h // groups) of [B, T, Hkv, D]."""
    return pl.BlockSpec((None, seq_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0))


def _forward(q, k, v, seg, *, scale, window, blocks: BlockSizes, interpret: bool, count_tiles: bool = False):
    b, t, hq, d = q.shape
    groups = hq // k.shape[2]
    bq, bk = blocks.block_q, blocks.block_k
    ranges = tile_ranges(seg, bq, bk, window)
    nq = t // bq
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, t), jnp.float32)]
    out_specs = [_query_block(bq, d), _query_stats(bq)]
    if count_tiles:
        out_shape.append(jax.ShapeDtypeStruct((b, hq, nq), jnp.int32))
        out_specs.append(_query_stats(1))  # one count per (query block, row, head)
    outs = pl.pallas_call(
        functools.partial(_forward_kernel, scale=scale, window=window, block_k=bk),
        grid=(nq, b, hq),
        in_specs=[
            _query_block(bq, d),
            _whole_kv(t, d, groups),
            _whole_kv(t, d, groups),
            _row(t),
            _row(nq),
            _row(nq),
        ],
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_params(blocks.num_warps, blocks.num_stages),
        interpret=interpret,
        name="segment_flash_forward",
    )(q, k, v, seg, ranges.kv_lo, ranges.kv_hi)
    return outs


def _backward(q, k, v, seg, o, lse, do, *, scale, window, blocks: BlockSizes, interpret: bool):
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    groups = hq // hkv
    bq, bk = blocks.block_q_bwd, blocks.block_k_bwd
    ranges = tile_ranges(seg, bq, bk, window)
    # delta_t = sum_d o * do: the softmax backward's row term; an XLA-fused reduction.
    delta = jnp.einsum("bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32))
    params = _params(blocks.num_warps_bwd, blocks.num_stages)

    # dk, dv: one program per (key block, row, kv head), looping over the group's query heads.
    group_rows = pl.BlockSpec((None, t, groups, d), lambda j, b_, h: (b_, 0, h, 0))
    group_stats = pl.BlockSpec((None, groups, t), lambda j, b_, h: (b_, h, 0))
    kv_block = pl.BlockSpec((None, bk, None, d), lambda j, b_, h: (b_, j, h, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, scale=scale, window=window, block_q=bq),
        grid=(t // bk, b, hkv),
        in_specs=[
            group_rows,
            group_rows,
            group_stats,
            group_stats,
            kv_block,
            kv_block,
            _row(t),
            _row(t // bk),
            _row(t // bk),
        ],
        out_specs=[kv_block, kv_block],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=params,
        interpret=interpret,
        name="segment_flash_dkdv",
    )(q, do, lse, delta, k, v, seg, ranges.q_lo, ranges.q_hi)

    # dq: one program per (query block, row, query head), over the same key tiles as the forward.
    q_block, stats_block, whole_kv = _query_block(bq, d), _query_stats(bq), _whole_kv(t, d, groups)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, window=window, block_k=bk),
        grid=(t // bq, b, hq),
        in_specs=[
            q_block,
            q_block,
            stats_block,
            stats_block,
            whole_kv,
            whole_kv,
            _row(t),
            _row(t // bq),
            _row(t // bq),
        ],
        out_specs=q_block,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=interpret,
        name="segment_flash_dq",
    )(q, do, lse, delta, k, v, seg, ranges.kv_lo, ranges.kv_hi)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, seg, scale, window, blocks, interpret):
    return _forward(q, k, v, seg, scale=scale, window=window, blocks=blocks, interpret=interpret)[0]


def _flash_fwd(q, k, v, seg, scale, window, blocks, interpret):
    o, lse = _forward(q, k, v, seg, scale=scale, window=window, blocks=blocks, interpret=interpret)
    return o, (q, k, v, seg, o, lse)


def _flash_bwd(scale, window, blocks, interpret, residuals, do):
    q, k, v, seg, o, lse = residuals
    dq, dk, dv = _backward(
        q, k, v, seg, o, lse, do, scale=scale, window=window, blocks=blocks, interpret=interpret
    )
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _padded(q, k, v, segment_ids, multiple: int):
    """Inputs padded to a multiple of the block sizes; padding gets PAD_SEGMENT (invisible)."""
    b, t = q.shape[:2]
    seg = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    pad = -t % multiple
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
        seg = jnp.pad(seg, ((0, 0), (0, pad)), constant_values=PAD_SEGMENT)
    return q, k, v, seg


def _check_shapes(q, k, v) -> None:
    b, t, hq, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != d or hq % k.shape[2]:
        raise ValueError(
            f"pallas_gpu attention needs q [B, T, Hq, D] and k, v [B, T, Hkv, D] with Hq a multiple of Hkv "
            f"(got q {q.shape}, k {k.shape}, v {v.shape})"
        )


def pallas_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    *,
    scale: float,
    precision: Any = None,
    sliding_window: int | None = None,
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Causal, segment-aware flash attention with grouped kv heads; see the module docstring."""
    del precision  # the kernels accumulate in fp32 on the tensor cores
    check_sliding_window(sliding_window)
    _check_shapes(q, k, v)
    blocks = block_sizes or default_block_sizes(q.shape[-1])
    multiple = math.lcm(blocks.block_q, blocks.block_k, blocks.block_q_bwd, blocks.block_k_bwd)

    def local(q, k, v, segment_ids):
        t = q.shape[1]
        qp, kp, vp, seg = _padded(q, k, v, segment_ids, multiple)
        return _flash(qp, kp, vp, seg, float(scale), sliding_window, blocks, bool(interpret))[:, :t]

    return run_sharded(local, q, k, v, segment_ids, name="pallas_gpu")


def kernel_tile_counts(
    q,
    k,
    v,
    segment_ids,
    *,
    scale: float,
    block_sizes: BlockSizes,
    sliding_window=None,
    interpret: bool = True,
) -> jax.Array:
    """[B, Hq, T // block_q]: how many key tiles the forward kernel itself ran per query block."""
    _check_shapes(q, k, v)
    qp, kp, vp, seg = _padded(q, k, v, segment_ids, math.lcm(block_sizes.block_q, block_sizes.block_k))
    outs = _forward(
        qp,
        kp,
        vp,
        seg,
        scale=scale,
        window=sliding_window,
        blocks=block_sizes,
        interpret=interpret,
        count_tiles=True,
    )
    return outs[2]


def _supports(query: SupportQuery) -> tuple[bool, str]:
    if query.platform not in ("gpu", "cpu"):
        return (
            False,
            f"the Pallas GPU kernel needs an NVIDIA GPU, or CPU in interpret mode (platform is {query.platform!r})",
        )
    if query.head_dim not in HEAD_DIMS:
        return False, f"the Pallas GPU kernel takes head_dim {HEAD_DIMS} (got {query.head_dim})"
    dtype = jnp.dtype(query.dtype)
    if query.platform == "gpu" and dtype not in _DTYPES:
        return (
            False,
            f"the Pallas GPU kernel needs bfloat16 or float16 inputs on GPU (compute dtype is {dtype})",
        )
    if query.platform == "cpu":
        return True, "Pallas GPU kernel in interpret mode on CPU (slow; for tests)"
    skip = "skipping the tiles outside the segments" if query.has_segments else "causal tiles only"
    return True, f"segment-aware Pallas flash attention, {skip}"


def _auto_supports(query: SupportQuery) -> tuple[bool, str]:
    if query.platform != "gpu":
        return False, "interpret mode is for tests, never an automatic choice"
    return _supports(query)


def _make(query: SupportQuery):
    if query.platform == "cpu":
        return functools.partial(pallas_attention, interpret=True, block_sizes=BlockSizes(64, 64, 64, 64))
    return functools.partial(
        pallas_attention, interpret=False, block_sizes=default_block_sizes(query.head_dim)
    )


BACKEND = AttentionBackend(
    name="pallas_gpu",
    supports=_supports,
    fn=pallas_attention,
    description="segment-aware Pallas (Triton) flash attention, forward and backward, tiles outside segments skipped",
    auto_supports=_auto_supports,
    make=_make,
)
