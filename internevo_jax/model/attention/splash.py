"""Splash attention (TPU): jax's sparse flash-attention Pallas kernel with a causal mask and segments.

The kernel (jax.experimental.pallas.ops.tpu.splash_attention) takes one sequence [heads, T, D]
with a static mask (causal, or causal + sliding window as a local mask) and-ed with segment ids,
and skips the blocks the mask rules out. Grouped kv heads go in as they are: the kernel reads kv
head h // (Hq / Hkv) for query head h and sums the kv gradients over each group, so k and v are
never repeated. The batch is a vmap. Splash has no scale argument, so q is scaled first.

Mosaic kernels are not partitioned by XLA: under a mesh the kernel runs per shard
(`sharding.run_sharded`: rows and heads split as the rules split q/k/v).
On CPU the same kernel runs in Pallas interpret mode (tests only: slow).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

from internevo_jax.model.attention.base import AttentionBackend, SupportQuery, check_sliding_window
from internevo_jax.model.attention.sharding import run_sharded

# Tile sizes tried, largest first: the first that divides T is used for every kernel (forward,
# dq, dkv). 512 is the usual TPU choice; the kernel needs multiples of 128 (its lane width).
BLOCK_SIZES = (512, 256, 128)
DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))  # fp16: Mosaic fails to compile on v5e
HEAD_DIM_RANGE = (8, 512)  # the range compiled for v5e and v6e (multiples of 8)
_ON_TPU = "TPU Splash flash attention (causal and segment masks skip whole blocks)"


def block_size(seq_len: int) -> int | None:
    """The tile size for rows of `seq_len` tokens, or None when the kernel cannot take them."""
    return next((b for b in BLOCK_SIZES if seq_len % b == 0), None)


def _length_problem(seq_len: int) -> str | None:
    if block_size(seq_len) is None:
        return (
            f"splash attention needs the sequence length to be a multiple of {BLOCK_SIZES[-1]} "
            f"(got {seq_len}); set data.seq_len (x micro_bsz) to a multiple of {BLOCK_SIZES[-1]}, "
            f"best of {BLOCK_SIZES[0]}, or use model.attn_impl='xla'"
        )
    return None


def _kernel(seq_len: int, heads: int, sliding_window: int | None, interpret: bool, block: int):
    sizes = kernel_lib.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    shape = (seq_len, seq_len)
    if sliding_window is None:
        mask = mask_lib.CausalMask(shape)
    else:  # w - 1 keys to the left of the query, none to its right: causal within the window
        mask = mask_lib.LocalMask(shape, window_size=(sliding_window - 1, 0), offset=0)
    # The kernel is built for the heads one device holds (the shard_map body's local shape).
    return kernel_lib.make_splash_mha(
        mask_lib.MultiHeadMask([mask] * heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )


def _local_attention(q, k, v, segment_ids, *, sliding_window, interpret, block):
    """Splash on arrays one device holds: q [b, T, hq, D] (already scaled), k/v [b, T, hkv, D]."""
    _, t, hq, _ = q.shape
    kernel = _kernel(t, hq, sliding_window, interpret, block)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [b, T, h, D] -> [b, h, T, D]
    q, k, v = heads_first(q), heads_first(k), heads_first(v)
    if segment_ids is None:
        out = jax.vmap(lambda q, k, v: kernel(q, k, v))(q, k, v)
    else:
        out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=kernel_lib.SegmentIds(s, s)))(
            q, k, v, segment_ids
        )
    return heads_first(out)


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    *,
    scale: float,
    precision: Any = None,
    sliding_window: int | None = None,
    interpret: bool = False,
    block: int | None = None,
) -> jax.Array:
    """Causal, segment-masked attention with grouped kv heads through the Splash kernel.

    `precision` is not used: the kernel accumulates in fp32 at its own precision. `interpret`
    runs the kernel in Pallas interpret mode (CPU tests). `block` forces a tile size (a multiple
    of 128 dividing T; default `block_size(T)`), so tests can put segment edges inside a row.
    """
    del precision
    check_sliding_window(sliding_window)
    t = q.shape[1]
    problem = _length_problem(t)
    if problem:
        raise ValueError(problem)
    block = block_size(t) if block is None else block
    if block % BLOCK_SIZES[-1] or t % block:
        raise ValueError(f"splash block {block} must be a multiple of {BLOCK_SIZES[-1]} dividing T={t}")
    # Scaled in fp32 and rounded once to q's dtype: the kernel's scores are then q.k as usual.
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)
    local = functools.partial(
        _local_attention, sliding_window=sliding_window, interpret=interpret, block=block
    )
    return run_sharded(local, q, k, v, segment_ids, name="splash")


def _supports(query: SupportQuery) -> tuple[bool, str]:
    if query.platform not in ("tpu", "cpu"):
        return False, f"splash attention is a TPU kernel (platform is {query.platform!r})"
    dtype = jnp.dtype(query.dtype)
    if dtype not in DTYPES:
        return False, f"splash attention needs bfloat16 or float32 inputs (compute dtype is {dtype})"
    low, high = HEAD_DIM_RANGE
    if query.head_dim % 8 or not low <= query.head_dim <= high:
        return (
            False,
            f"splash attention needs head_dim a multiple of 8 in [{low}, {high}] (got {query.head_dim})",
        )
    if query.seq_len is not None:
        problem = _length_problem(query.seq_len)
        if problem:
            return False, problem
    if query.platform == "cpu":
        return True, "the TPU Splash kernel in Pallas interpret mode (slow; for tests)"
    return True, _ON_TPU


def _auto_supports(query: SupportQuery) -> tuple[bool, str]:
    if query.platform != "tpu":
        return False, "interpret mode is for tests (auto takes splash on TPU only)"
    return True, _ON_TPU


def _make(query: SupportQuery):
    return functools.partial(splash_attention, interpret=query.platform != "tpu")


BACKEND = AttentionBackend(
    name="splash",
    supports=_supports,
    fn=splash_attention,
    description="jax's TPU Splash (sparse flash) attention kernel, vmapped over rows, shard_map over the mesh",
    auto_supports=_auto_supports,
    make=_make,
)
