"""Choosing an attention backend: an ordered list and explicit support checks.

"auto" takes the first backend in BACKENDS whose check passes for the platform, dtype and
shapes at hand. A backend named explicitly must pass its check, or selection raises a
ValueError carrying the check's reason: a requested kernel is never swapped silently.
"""

from __future__ import annotations

import difflib
from typing import Any

import jax

from internevo_jax.model.attention import cudnn, xla
from internevo_jax.model.attention.base import AttentionBackend, SupportQuery

# Fastest first. Only backends that are implemented are listed (xla is last: it always works).
BACKENDS: tuple[AttentionBackend, ...] = (cudnn.BACKEND, xla.BACKEND)


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
    use_flash_attn: bool = True,
) -> AttentionBackend:
    """Resolve "auto" or an explicit backend name to a backend that supports this case.

    `use_flash_attn=False` (InternEvo's switch for its vanilla attention) makes "auto" mean
    "xla"; an explicit name still wins.
    """
    platform = platform or detect_platform()
    query = SupportQuery(
        platform=platform,
        dtype=dtype,
        head_dim=head_dim,
        has_segments=has_segments,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        seq_len=seq_len,
    )
    if requested == "auto":
        candidates = BACKENDS if use_flash_attn else (xla.BACKEND,)
        reasons = []
        for backend in candidates:
            ok, reason = backend.supports(query)
            if ok:
                return backend
            reasons.append(f"{backend.name}: {reason}")
        raise ValueError("no attention backend supports this case: " + "; ".join(reasons))
    backend = get_backend(requested)
    ok, reason = backend.supports(query)
    if not ok:
        raise ValueError(
            f"attention backend {requested!r} cannot run here: {reason}. "
            f"Set model.attention_backend='auto' to pick among {backend_names()}."
        )
    return backend


def attention_backend_name(
    cfg: Any,
    platform: str | None = None,
    *,
    seq_len: int | None = None,
    has_segments: bool = True,
) -> str:
    """The backend a model built from `cfg` will use (for the trainer's start-up log).

    Raises the same ValueError the model would raise for an unsupported explicit choice.
    """
    from internevo_jax.model.args import ModelArgs

    args = ModelArgs.from_config(cfg)
    return select_attention_backend(
        args.attention_backend,
        platform or args.platform,
        dtype=args.dtype,
        head_dim=args.head_dim,
        has_segments=has_segments,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        seq_len=seq_len,
        use_flash_attn=args.use_flash_attn,
    ).name
