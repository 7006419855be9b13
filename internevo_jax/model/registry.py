"""model_type -> model class, and build_model(cfg)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from internevo_jax.names import UNSUPPORTED_MODEL_TYPES, unsupported_model_message

MODEL_REGISTRY: dict[str, Any] = {}


def register_model(name: str, model: Any = None) -> Any:
    """Register `model` under `name`; usable as `@register_model("NAME")` or a plain call.

    `model` is a flax Module class with a `from_config(cfg)` classmethod (and optionally
    `notes(cfg)`), or any callable taking the Config and returning a Module. Registering a name twice replaces the entry,
    so users can override a built-in model.
    """

    def _register(obj: Any) -> Any:
        MODEL_REGISTRY[name] = obj
        return obj

    if model is None:
        return _register
    return _register(model)


# InternEvo's wrapper of a Hugging Face PyTorch model of a family ("INTERNLM_FROM_HF"): here the
# family's own model, whose weights load from the HF folder (ckpt_type "hf_model" / "hf").
FROM_HF_SUFFIX = "_FROM_HF"


def get_model_class(name: str) -> Any:
    """The registered entry for `name`; ValueError listing the names and the closest one."""
    if name in UNSUPPORTED_MODEL_TYPES:
        raise ValueError(unsupported_model_message(name))
    if isinstance(name, str) and name.endswith(FROM_HF_SUFFIX) and name not in MODEL_REGISTRY:
        family = name[: -len(FROM_HF_SUFFIX)]
        if family not in MODEL_REGISTRY:
            raise ValueError(
                f"model_type {name!r} wraps a Hugging Face model of the family {family!r}, which this "
                f"project does not implement; the families it has: {', '.join(sorted(MODEL_REGISTRY))} "
                f'(load their HF weights with ckpt.load_ckpt_info ckpt_type="hf").'
            )
        return MODEL_REGISTRY[family]
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        names = sorted(MODEL_REGISTRY)
        by_lower = {n.lower(): n for n in names}
        close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.0)
        hint = f" The closest is {by_lower[close[0]]!r}." if close else ""
        raise ValueError(
            f"unknown model_type {name!r}; registered model types: {', '.join(names)}.{hint} "
            "Register your own with internevo_jax.model.register_model."
        ) from None


def build_model(cfg: Any) -> nn.Module:
    """The Module for `cfg.model_type`, configured from `cfg` (uses cfg.model, cfg.use_fp32_norm)."""
    entry: Callable[..., nn.Module] | Any = get_model_class(cfg.model_type)
    factory = getattr(entry, "from_config", None)
    return factory(cfg) if factory is not None else entry(cfg)


def model_notes(cfg: Any) -> list[str]:
    """Human-readable notes on settings the chosen model accepts but ignores (for the start-up log).

    A registered model class may define `notes(cfg) -> list[str]`; others have none.
    """
    notes = getattr(get_model_class(cfg.model_type), "notes", None)
    return list(notes(cfg)) if notes is not None else []


def model_family(model_type: str) -> str:
    """The parameter layout of a registered model type: "INTERNLM", "INTERNLM2" or "LLAMA2".

    Aliases share their target's family (INTERNLM2_PUBLIC -> INTERNLM2); a user model that
    declares no `family` is its own.
    """
    return str(getattr(get_model_class(model_type), "family", model_type))
