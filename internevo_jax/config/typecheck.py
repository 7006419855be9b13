"""Turn raw config dicts into the typed sections, checking keys and value types on the way."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from .errors import ConfigError, unknown_key_error


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint for a section dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def strip_optional(hint: Any) -> Any:
    """X | None -> X (other unions are returned unchanged)."""
    args = _union_args(hint)
    if args and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) == 1:
            return rest[0]
    return hint


def describe(hint: Any) -> str:
    """Human wording of a type hint for error messages."""
    args = _union_args(hint)
    if args:
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "None"
    if hint is bool:
        return "True or False"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    origin = typing.get_origin(hint) or hint
    if origin is dict:
        return "a dict"
    if origin is tuple:
        item = (typing.get_args(hint) or (str,))[0]
        return {int: "a list of integers", str: "a list of strings"}.get(item, "a list")
    if dataclasses.is_dataclass(hint):
        return "a dict"
    return "any value"


class _Mismatch(Exception):
    """Raised inside coerce() when a value does not fit one alternative of a union."""


def _coerce_one(value: Any, hint: Any, dotted: str, source: str) -> Any:
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        # No 0/1 for flags: a number where a flag belongs is usually a key mix-up.
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        # bool is a subclass of int; True for a size is a mistake, not 1.
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        # 5e4 is a common way to write 50000; 2.5 is not an integer.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    origin = typing.get_origin(hint) or hint
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
    if origin is tuple:
        item = (typing.get_args(hint) or (str,))[0]
        if not isinstance(value, (list, tuple)):
            value = (value,)  # one item stands for a list of one ("model" or eos_id=2)
        return tuple(_coerce_one(v, item, dotted, source) for v in value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return build_section(hint, value, dotted, source)
        raise _Mismatch
    raise TypeError(f"unsupported schema type {hint!r} for {dotted}")


def coerce(value: Any, hint: Any, dotted: str, source: str) -> Any:
    """Check ``value`` against ``hint`` and return it in canonical form, or raise ConfigError."""
    alternatives = _union_args(hint) or (hint,)
    for alt in alternatives:
        try:
            return _coerce_one(value, alt, dotted, source)
        except _Mismatch:
            continue
    example = {
        "True or False": "True",
        "an integer": "4",
        "a number": "0.5",
        "a string": '"text"',
    }.get(describe(strip_optional(hint)))
    fix = f" Write it like {dotted.rpartition('.')[2]}={example}." if example else ""
    raise ConfigError(
        f"{source}: '{dotted}' must be {describe(hint)}, got {value!r} ({type(value).__name__}).{fix}",
        key=dotted,
        source=source,
    )


def build_section(cls: type, raw: Any, dotted: str, source: str) -> Any:
    """Build dataclass ``cls`` from dict ``raw``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: '{dotted}' must be a dict (e.g. {dotted.rpartition('.')[2]}=dict(...)), "
            f"got {raw!r} ({type(raw).__name__}).",
            key=dotted,
            source=source,
        )
    hints = field_hints(cls)
    for key in raw:
        if key not in hints:
            raise unknown_key_error(source, f"{dotted}.{key}", hints)
    kwargs = {key: coerce(raw[key], hints[key], f"{dotted}.{key}", source) for key in raw}
    return cls(**kwargs)


def hint_for_path(top: dict[str, Any], path: list[str], source: str, origin: str = "") -> Any:
    """The type hint a dotted key path points at; unknown segments raise the unknown-key error.

    ``top`` maps top-level names to hints. Segments below a free-form dict are not checked.
    """
    head = path[0]
    if head not in top:
        raise unknown_key_error(source, head, top, origin=origin)
    hint = top[head]
    for i, part in enumerate(path[1:], start=1):
        hint = strip_optional(hint)
        prefix = ".".join(path[:i])
        if dataclasses.is_dataclass(hint):
            hints = field_hints(hint)
            if part not in hints:
                raise unknown_key_error(source, f"{prefix}.{part}", hints, origin=origin)
            hint = hints[part]
        elif hint is Any or (typing.get_origin(hint) or hint) is dict:
            return Any
        else:
            raise ConfigError(
                f"{source}: '{prefix}' is {describe(hint)}, so it has no key '{part}'{origin}. "
                f"Set '{prefix}' itself instead.",
                key=".".join(path),
                source=source,
            )
    return hint
