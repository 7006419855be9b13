"""Model family -> its Hugging Face layout (`HFMapping`).

Every module in internevo_jax/hf/families/ that defines `MAPPING` (or a tuple `MAPPINGS`) is
registered when this module is imported (and `NO_LAYOUT`, {family: why it has no layout}, words
the error for a family that has none); `register_mapping` adds (or replaces) a layout declared elsewhere, e.g. for a user's
own model family.
"""

from __future__ import annotations

import importlib
import pkgutil

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf import families
from internevo_jax.hf.spec import HFMapping

_MAPPINGS: dict[str, HFMapping] = {}  # the registration table: model family -> layout
_NO_LAYOUT: dict[str, str] = {}  # model family -> why transformers has no layout for it


def register_mapping(mapping: HFMapping) -> HFMapping:
    """Register `mapping` for each of its families (replacing an earlier entry); returns it."""
    for family in mapping.families:
        _MAPPINGS[family] = mapping
    return mapping


def _register_builtin() -> None:
    # Found by listing the folder, so a new family needs its mapping file and nothing else.
    for info in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{families.__name__}.{info.name}")
        found = [getattr(module, "MAPPING", None), *getattr(module, "MAPPINGS", ())]
        for mapping in found:
            if isinstance(mapping, HFMapping):
                register_mapping(mapping)
        _NO_LAYOUT.update(getattr(module, "NO_LAYOUT", {}))


def mappings() -> list[HFMapping]:
    """Every registered layout once, in the order of their first family's name."""
    seen: list[HFMapping] = []
    for family in sorted(_MAPPINGS):
        if not any(m is _MAPPINGS[family] for m in seen):
            seen.append(_MAPPINGS[family])
    return seen


def mapping_for(family: str) -> HFMapping:
    """The layout of model family `family`; CheckpointError when it has none."""
    if family in _MAPPINGS:
        return _MAPPINGS[family]
    if family in _NO_LAYOUT:
        moe = [f"{m.architecture} (model_type {m.model_type_hint})" for m in mappings() if m.moe is not None]
        raise CheckpointError(
            f"model_type family {family!r} cannot be converted to or from Hugging Face: {_NO_LAYOUT[family]}. "
            f"The mixture-of-experts layouts HF conversion reads and writes are {', '.join(moe)}; a model "
            "of one of those model types can be exported and loaded with transformers."
        )
    raise CheckpointError(
        f"model_type family {family!r} has no Hugging Face layout; HF conversion supports "
        f"{', '.join(sorted(_MAPPINGS))}."
    )


def mapping_of_config(config: dict, source: str) -> HFMapping:
    """The layout an HF config.json describes (by "architectures", else by "model_type")."""
    archs = config.get("architectures") or []
    kind = config.get("model_type")
    known = mappings()
    for mapping in known:
        if mapping.architecture in archs:
            return mapping
    for mapping in known:
        if kind == mapping.hf_model_type:
            return mapping
    names = [m.description for m in known]
    readable = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    raise CheckpointError(
        f"{source}/config.json describes {', '.join(archs) or kind or 'an unknown model'}, which this "
        f"converter does not read: it reads {readable}. Use a checkpoint of one of those architectures."
    )


_register_builtin()
