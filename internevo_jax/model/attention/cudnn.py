"""cuDNN fused (flash) attention, with two routes for packed rows.

* Unpacked rows (segment_ids=None): the public jax.nn.dot_product_attention(implementation="cudnn")
  with cuDNN's built-in causal mask, which skips the masked blocks.
* Packed rows, segment-offset route: jax's private
  `jax._src.cudnn.fused_attention_stablehlo.dot_product_attention` takes, per row, the start
  (`q_offsets` / `kv_offsets`) and length (`q_seqlen` / `kv_seqlen`) of each segment and runs
  cuDNN's ragged (THD) kernel with a PADDING_CAUSAL mask: every segment is its own causal
  sequence. Measured 0.57 ms fwd+bwd on H100 at T=4096 (DESIGN §10).
* Packed rows, dense-mask route: the public function with a boolean [B, 1, T, T] same-segment
  mask next to is_causal (2.4 ms there; still ~3x faster than the XLA backend). It runs where the
  segment-offset route is unavailable, and for a call in which a row holds more segments than
  MAX_SEGMENTS.

The private API, read in jax's sources (fused_attention_stablehlo.py) of every release from
0.4.30 to 0.11.0 and of the main branch at 0.11.1.dev (August 2026):

* jax < 0.5.1: no q_offsets / kv_offsets (no segment-offset route).
* 0.5.1 - 0.6.x: offsets exist, but unused segment slots reach cuDNN with length -1 (fixed in 0.7.0).
* 0.7.0 - 0.11.0 and main: the signature used here, unchanged since 0.6.0:
  dot_product_attention(query, key, value, bias, mask, q_seqlen, kv_seqlen, q_offsets,
  kv_offsets, fp8_params, *, scale, mask_type, seed, dropout_rate, qkv_layout,
  sliding_window_length, use_fp8, return_residual). Up to 0.11.0 the key offsets are strided by
  the query head count, wrong for grouped kv heads (fixed on main after 0.11.0), so a probe of
  that stride decides whether k and v are first repeated to the query heads.
* 0.11.1 - 0.12.x (the GPU machines' 0.11.2, the coming 0.12) are taken on the strength of that
  stable signature, which the signature probe checks at start-up.
* Every version needs a Hopper (sm90) or newer GPU for packed rows, and jax's batching rule for
  the cuDNN primitive folds neither the offsets nor a [B, 1, T, T] mask, so neither packed route
  runs under jax.vmap (the pipeline schedule vmaps its stages); unpacked rows do.

So the segment-offset route runs for MIN_JAX <= jax < MAX_JAX when the function has the
parameters above; otherwise packed rows take the dense-mask route, and a log line says why.

Segments are runs of equal ids, which is what packing produces (each id is one contiguous run).
Padding runs (id 0) are segments too, so every output is written (cuDNN leaves tokens outside
the listed segments unwritten); a padding token then sees the padding before it in its own run
instead of all earlier padding, which changes only outputs the loss ignores.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from typing import Any

import jax
import jax.numpy as jnp

from internevo_jax.model.attention.base import (
    AttentionBackend,
    SupportQuery,
    check_sliding_window,
    same_segment_mask,
)
from internevo_jax.monitor import logger

_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
MAX_HEAD_DIM = 128
PRIVATE_MODULE = "jax._src.cudnn.fused_attention_stablehlo"
MIN_JAX = (0, 7, 0)  # first release whose unused segment slots reach cuDNN valid (module docstring)
MAX_JAX = (0, 13, 0)  # newer releases take the dense-mask route until their sources are read
# The parameters the route passes, by name.
_PARAMS = ("q_seqlen", "kv_seqlen", "q_offsets", "kv_offsets", "scale", "mask_type", "qkv_layout")
_WINDOW_PARAM = "sliding_window_length"
# Slots per row in cuDNN's segment tables. cuDNN keeps fp32 softmax statistics of
# [B * MAX_SEGMENTS, heads, T] and schedules every slot, used or not, so the cap trades that
# memory and the empty slots' launches against how often a row overflows to the dense mask.
MAX_SEGMENTS = 64
MIN_COMPUTE_CAPABILITY = (9, 0)  # jax refuses packed rows below Hopper


def _version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as "0.11.2" or "0.12.0.dev20260801"."""
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in version)


def private_api():
    """jax's private cuDNN attention module (ImportError where it moved)."""
    return importlib.import_module(PRIVATE_MODULE)


@functools.cache
def segment_route(sliding_window: bool = False) -> tuple[bool, str]:
    """Whether the segment-offset route can run with the installed jax (and GPU), and why (not).

    Checked once per process: the jax version, the private function's parameters (with
    `sliding_window`, also its window parameter), and on a GPU its compute capability.
    """
    version = _version(jax.__version__)
    if not MIN_JAX <= version < MAX_JAX:
        return False, (
            f"jax {jax.__version__} is outside the versions whose private cuDNN segment API was checked "
            f"({_dotted(MIN_JAX)} <= jax < {_dotted(MAX_JAX)})"
        )
    try:
        fa = private_api()
        params = inspect.signature(fa.dot_product_attention).parameters
        fa.MaskType.PADDING_CAUSAL  # noqa: B018 - the mask type the route passes
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return (
            False,
            f"jax {jax.__version__} has no {PRIVATE_MODULE}.dot_product_attention as expected ({err})",
        )
    missing = [p for p in _PARAMS + ((_WINDOW_PARAM,) if sliding_window else ()) if p not in params]
    if missing:
        return False, f"jax {jax.__version__}'s {PRIVATE_MODULE}.dot_product_attention lacks {missing}"
    capability = _gpu_capability()
    if capability is not None and capability < MIN_COMPUTE_CAPABILITY:
        return False, (
            f"packed rows need a Hopper or newer GPU (compute capability {_dotted(capability)} < "
            f"{_dotted(MIN_COMPUTE_CAPABILITY)})"
        )
    return True, f"cuDNN segment offsets (jax {jax.__version__}'s private {PRIVATE_MODULE} API)"


def _gpu_capability() -> tuple[int, ...] | None:
    """The first GPU's compute capability, or None when jax runs on no GPU (a plan for one)."""
    if jax.default_backend() != "gpu":
        return None
    text = getattr(jax.devices()[0], "compute_capability", None)
    return _version(text) if text else None


@functools.cache
def kv_offsets_follow_kv_heads() -> bool:
    """True when the private API strides key offsets by the key's own head count.

    Probed on the function itself (pure jnp): a query of 2 heads, a key of 1 head of size 8, a
    second segment at token 2. Its key offset must be 2 * 1 * 8 elements (jax <= 0.11.0 gives
    2 * 2 * 8). Where the probe cannot run, k and v are repeated (always correct).
    """
    try:
        fix = private_api()._fix_seqlen_offsets
        with jax.ensure_compile_time_eval():
            q, k = jnp.zeros((1, 4, 2, 8), jnp.bfloat16), jnp.zeros((1, 4, 1, 8), jnp.bfloat16)
            offsets, lengths = jnp.array([[0, 2, -1]], jnp.int32), jnp.array([[2, 2]], jnp.int32)
            kv_offsets = fix(lengths, lengths, offsets, offsets, q, k)[3]
            return int(kv_offsets[0, 1]) == 2 * 1 * 8
    except Exception:  # noqa: BLE001 - any change in the private helper means "do not rely on it"
        return False


@functools.cache
def log_once(message: str) -> None:
    """Log `message` the first time it is given (the route is chosen again at every trace)."""
    logger.info(message)


def segment_tables(segment_ids: jax.Array, max_segments: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """cuDNN's segment tables of packed rows [B, T]: (offsets [B, M+1], lengths [B, M], runs [B]).

    A segment is a run of equal ids (padding runs of id 0 included). offsets[b, j] is the first
    token of row b's j-th run and lengths[b, j] its length, for j < min(runs, M); the other
    entries are -1 (jax's "no segment"), and so is the last offsets column. runs[b] counts the
    row's runs; a row with more than M runs has only its first M listed.
    """
    b, t = segment_ids.shape
    ids = segment_ids.astype(jnp.int32)
    starts = jnp.concatenate([jnp.ones((b, 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    run = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1  # the run each token belongs to
    # Start tokens write their position into their run's slot; slot M is kept one column longer
    # so that the M-th listed run still knows where it ends. Other tokens write out of range.
    slot = jnp.where(starts, run, max_segments + 1)
    position = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    rows = jnp.arange(b)[:, None]
    first = jnp.full((b, max_segments + 1), -1, jnp.int32).at[rows, slot].set(position, mode="drop")
    offsets = first[:, :max_segments]
    ends = jnp.where(first[:, 1:] >= 0, first[:, 1:], t)
    lengths = jnp.where(offsets >= 0, ends - offsets, -1)
    offsets = jnp.concatenate([offsets, jnp.full((b, 1), -1, jnp.int32)], axis=1)
    return offsets, lengths, run[:, -1] + 1


def dpa_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    *,
    scale: float,
    precision: Any = None,
    sliding_window: int | None = None,
    implementation: str | None = "cudnn",
) -> jax.Array:
    """jax.nn.dot_product_attention with causal masking and an optional dense segment mask.

    `implementation` exists so that the mask and layout handling can be checked on CPU
    with implementation="xla"; the registered backend always uses "cudnn".
    """
    del precision  # cuDNN picks its own accumulation (fp32)
    check_sliding_window(sliding_window)
    # The window counts the query itself: w - 1 keys to its left.
    window = None if sliding_window is None else (sliding_window - 1, 0)
    # Same-segment only; the causal part is left to is_causal so cuDNN can skip blocks.
    mask = None if segment_ids is None else same_segment_mask(segment_ids)[:, None]
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=mask,
        scale=scale,
        is_causal=True,
        local_window_size=window,
        implementation=implementation,
    )


def cudnn_segment_call(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    offsets: jax.Array,
    lengths: jax.Array,
    *,
    scale: float,
    sliding_window: int | None,
) -> jax.Array:
    """The private call: every listed segment a causal sequence of its own (keywords only, so a
    reordering of the positional parameters cannot misplace an argument)."""
    fa = private_api()
    return fa.dot_product_attention(
        q,
        k,
        v,
        q_seqlen=lengths,
        kv_seqlen=lengths,
        q_offsets=offsets,
        kv_offsets=offsets,
        scale=scale,
        mask_type=fa.MaskType.PADDING_CAUSAL,
        qkv_layout="BTNH",
        # cuDNN's window is (pos - w, pos]: it counts the query itself, as ours does.
        sliding_window_length=sliding_window,
    )


def segment_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    *,
    scale: float,
    precision: Any = None,
    sliding_window: int | None = None,
) -> jax.Array:
    """Packed rows through cuDNN's segment offsets; rows with more than MAX_SEGMENTS runs (a
    runtime fact) make the whole call take the dense mask instead, so the result is always exact."""
    if segment_ids is None:
        return dpa_attention(q, k, v, None, scale=scale, precision=precision, sliding_window=sliding_window)
    check_sliding_window(sliding_window)
    t = q.shape[1]
    max_segments = min(MAX_SEGMENTS, t)
    offsets, lengths, runs = segment_tables(segment_ids, max_segments)

    def fast(q, k, v, segment_ids):
        groups = q.shape[2] // k.shape[2]
        if groups > 1 and not kv_offsets_follow_kv_heads():
            # jax <= 0.11.0 strides key offsets by the query head count: give k and v as many heads.
            k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        return cudnn_segment_call(q, k, v, offsets, lengths, scale=scale, sliding_window=sliding_window)

    # Recomputed in the backward pass: a cond keeps the residuals of both branches, and the
    # dense mask's [B, 1, T, T] would otherwise be kept even when the offsets ran.
    @jax.checkpoint
    def dense(q, k, v, segment_ids):
        return dpa_attention(q, k, v, segment_ids, scale=scale, sliding_window=sliding_window)

    if max_segments == t:  # a row of T tokens has at most T runs: the tables always fit
        return fast(q, k, v, segment_ids)
    return jax.lax.cond(jnp.max(runs) <= max_segments, fast, dense, q, k, v, segment_ids)


def _make(query: SupportQuery):
    """The function for `query`'s case: unpacked rows the public function's causal path, packed
    rows `segment_attention` where the route is available, else the dense mask (logged once)."""
    if not query.has_segments:
        return dpa_attention
    ok, why = segment_route(query.sliding_window is not None)
    if ok:
        return segment_attention
    log_once(f"cuDNN attention: packed rows use the dense [B, 1, T, T] mask because {why}")
    return dpa_attention


def _supports(query: SupportQuery) -> tuple[bool, str]:
    if query.platform not in ("gpu", "cuda"):
        return False, f"cuDNN attention needs an NVIDIA GPU (platform is {query.platform!r})"
    if jnp.dtype(query.dtype) not in _DTYPES:
        return (
            False,
            f"cuDNN attention needs bfloat16 or float16 inputs (compute dtype is {jnp.dtype(query.dtype)})",
        )
    if query.head_dim % 8 or query.head_dim > MAX_HEAD_DIM:
        return (
            False,
            f"cuDNN attention needs head_dim a multiple of 8 and <= {MAX_HEAD_DIM} (got {query.head_dim})",
        )
    # Even for the segment route: its overflow fallback is the dense mask.
    if query.has_segments and query.seq_len is not None and query.seq_len % 2:
        return False, f"cuDNN attention with a mask needs an even sequence length (got {query.seq_len})"
    if not query.has_segments:
        return True, "cuDNN flash attention with its built-in causal mask"
    if query.vmapped:
        return False, (
            "packed rows inside pipeline stages: jax's batching rule for the cuDNN call folds neither "
            "the segment offsets nor a dense mask, and the stages run under vmap; use 'pallas_gpu'"
        )
    ok, why = segment_route(query.sliding_window is not None)
    if ok:
        return True, f"packed segments run through {why}, up to {MAX_SEGMENTS} per row (more: dense mask)"
    return True, f"packed segments use a dense [B, 1, T, T] mask (~4x slower) because {why}"


def _auto_supports(query: SupportQuery) -> tuple[bool, str]:
    """The check of "auto": packed rows only through the segment-offset route, since the dense
    mask is slower than a segment-aware kernel further down the list."""
    if query.has_segments:
        ok, why = segment_route(query.sliding_window is not None)
        if not ok:
            return False, (
                f"packed rows: cuDNN's segment-offset route is unavailable because {why}; its dense-mask "
                "path is left to an explicit model.attn_impl='cudnn'"
            )
    return _supports(query)


BACKEND = AttentionBackend(
    name="cudnn",
    supports=_supports,
    fn=segment_attention,
    description="cuDNN flash attention: jax.nn.dot_product_attention, packed rows through cuDNN's segment offsets",
    auto_supports=_auto_supports,
    make=_make,
)
