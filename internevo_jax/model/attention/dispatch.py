"""Choosing an attention backend: an ordered list and explicit support checks.

"auto" takes the first backend in BACKENDS whose check passes for the platform, dtype and
shapes at hand. A backend named explicitly must pass its check, or selection raises a
ValueError carrying the check's reason: a requested kernel is never swapped silently.

The platform is the one selection is for: jax's default platform, or a stated one. Besides jax's
platforms it may be `MEMORY_PLAN_PLATFORM`, the memory plan's target (`--dry-run`): the step is
compiled on CPU stand-in devices to measure what a run whose attention is a fused (flash / cuDNN)
kernel holds. There every backend is checked as on "cpu" (an explicit "cudnn" still fails), and the
chosen one is returned as its memory stand-in: the same function with its scores recomputed in
the backward pass, so one layer's scores exist at a time, as in a fused kernel, instead of the
[heads, T, T] probabilities of every layer.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import jax

from internevo_jax.model.attention import cudnn, pallas_gpu, splash, xla
from internevo_jax.model.attention.base import AttentionBackend, AttentionFn, SupportQuery

# Fastest first. Only backends that are implemented are listed (xla is last: it always works).
BACKENDS: tuple[AttentionBackend, ...] = (cudnn.BACKEND, pallas_gpu.BACKEND, splash.BACKEND, xla.BACKEND)
MEMORY_PLAN_PLATFORM = "cpu-memory-plan"  # a stated target, not a jax platform (module docstring)


def backend_names() -> list[str]:
    """Names of the implemented backends, in "auto" preference order."""
    return [b.name for b in BACKENDS]


def get_backend(name: str) -> AttentionBackend:
    """The backend called `name`; ValueError naming the valid ones otherwise."""
    for backend in BACKENDS:
        if backend.name == name:
            return backend
    close = difflib.get_close_matches(name, backend_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown attention backend {name!r}; choose 'auto' or one of {backend_names()}.{hint}")


def detect_platform() -> str:
    """The default JAX platform: "cpu", "tpu", "gpu" (NVIDIA) or "rocm"."""
    backend = jax.default_backend()
    if backend == "gpu":
        try:
            version = jax.devices()[0].client.platform_version.lower()
        except Exception:  # noqa: BLE001 - an exotic client without the attribute is "gpu"
            version = ""
        if "rocm" in version:
            return "rocm"
    return backend


@dataclasses.dataclass(frozen=True)
class Choice:
    """A backend chosen for one case: the function to call and why it was chosen."""

    backend: AttentionBackend
    fn: AttentionFn
    reason: str

    @property
    def name(self) -> str:
        return self.backend.name


def select_attention_backend(
    requested: str,
    platform: str | None = None,
    *,
    dtype: Any,
    head_dim: int,
    has_segments: bool,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    seq_len: int | None = None,
    sliding_window: int | None = None,
    vmapped: bool = False,
    use_flash_attn: bool = True,
) -> Choice:
    """Resolve "auto" or an explicit backend name to a backend that supports this case.

    `use_flash_attn=False` (InternEvo's switch for its vanilla attention) makes "auto" mean
    "xla"; an explicit name still wins.
    """
    platform = platform or detect_platform()
    plan = platform == MEMORY_PLAN_PLATFORM
    query = SupportQuery(
        platform="cpu" if plan else platform,
        dtype=dtype,
        head_dim=head_dim,
        has_segments=has_segments,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        seq_len=seq_len,
        sliding_window=sliding_window,
        vmapped=vmapped,
    )
    backend, reason = _choose(requested, query, use_flash_attn)
    choice = Choice(backend, backend.function_for(query), reason)
    return memory_standin(choice) if plan else choice


def _choose(requested: str, query: SupportQuery, use_flash_attn: bool) -> tuple[AttentionBackend, str]:
    if requested == "auto":
        if not use_flash_attn:
            return xla.BACKEND, "auto with model.use_flash_attn=False: the plain reference attention"
        skipped = []
        for backend in BACKENDS:
            ok, reason = backend.check_auto(query)
            if ok:
                passed = f" (skipped {'; '.join(skipped)})" if skipped else ""
                return backend, f"auto on {query.platform}: {reason}{passed}"
            skipped.append(f"{backend.name}: {reason}")
        raise ValueError("no attention backend supports this case: " + "; ".join(skipped))
    backend = get_backend(requested)
    ok, reason = backend.supports(query)
    if not ok:
        raise ValueError(
            f"attention backend {requested!r} cannot run here: {reason}. "
            f"Set model.attn_impl='auto' to pick among {backend_names()}."
        )
    return backend, f"requested by model.attn_impl: {reason}"


def memory_standin(choice: Choice) -> Choice:
    """`choice` with its scores recomputed in the backward pass: the memory of a fused kernel.

    Only residuals q, k, v (and the output) stay per layer, as a fused kernel keeps q, k, v, o and
    its row statistics; what the backward needs is recomputed one layer at a time.
    """
    fn = choice.fn

    def recompute(q, k, v, segment_ids, *, scale, precision=None, sliding_window=None):
        def run(q, k, v, s):
            return fn(q, k, v, s, scale=scale, precision=precision, sliding_window=sliding_window)

        return jax.checkpoint(run)(q, k, v, segment_ids)

    return Choice(choice.backend, recompute, choice.reason + "; scores recomputed in the backward pass")


def choice_for_args(
    args: Any, *, seq_len: int | None, has_segments: bool, platform: str | None = None
) -> Choice:
    """The backend for a model with `ModelArgs` `args` on rows of `seq_len` tokens."""
    return select_attention_backend(
        args.attn_impl,
        platform or args.platform,
        dtype=args.dtype,
        head_dim=args.head_dim,
        has_segments=has_segments,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        seq_len=seq_len,
        sliding_window=args.sliding_window,
        vmapped=args.pipeline_chunk,
        use_flash_attn=args.use_flash_attn,
    )


def attention_choice(
    cfg: Any,
    platform: str | None = None,
    *,
    seq_len: int | None = None,
    has_segments: bool = True,
    window_len: int | None = None,
) -> Choice:
    """The backend a model built from `cfg` will use on rows of `seq_len` tokens, and why (for
    the trainer's start-up log).

    Packed rows made of fixed windows (data.pack_sample_into_one=True, or `window_len` for rows
    that are windows whatever the config says: validation rows) run per window without a mask,
    as the model does; the reason says so. Raises the same ValueError the model would raise for
    an unsupported explicit choice.
    """
    from internevo_jax.model.args import ModelArgs
    from internevo_jax.model.registry import build_model

    # The model type's own args (its family's defaults); a user model without them: the config's.
    args = getattr(build_model(cfg), "args", None) or ModelArgs.from_config(cfg)
    if window_len is not None:
        args = dataclasses.replace(args, fixed_window_len=int(window_len))
    window = args.window_for(seq_len) if has_segments else None
    if window is None:
        return choice_for_args(args, seq_len=seq_len, has_segments=has_segments, platform=platform)
    choice = choice_for_args(args, seq_len=window, has_segments=False, platform=platform)
    windows = (
        f"rows of {seq_len} tokens run as {seq_len // window} fixed {window}-token windows without a mask"
    )
    return dataclasses.replace(choice, reason=f"{windows}; {choice.reason}")


def attention_backend_name(cfg: Any, platform: str | None = None, **kwargs: Any) -> str:
    """The name of `attention_choice(cfg, platform, **kwargs)`."""
    return attention_choice(cfg, platform, **kwargs).name
