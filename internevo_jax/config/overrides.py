"""``--set KEY=VALUE`` overrides applied to the raw config dicts."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .typecheck import hint_for_path, strip_optional

# Upper-case names accepted by --set; other variables were already substituted into the dicts.
JOB_NAME_KEYS = ("JOB_NAME", "job_name")


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]
    value: Any
    text: str  # the raw VALUE, used when the key expects a string
    origin: str  # " (from --set KEY=VALUE)", appended to error messages


def parse_override(item: str) -> Override:
    """Parse "a.b.c=VALUE": VALUE through ast.literal_eval, or the raw text when that fails."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(
            f"--set {item!r}: an override must look like KEY=VALUE with a dotted key, "
            f"e.g. --set data.micro_bsz=4.",
            source="--set",
        )
    key, text = item.split("=", 1)
    key, text = key.strip(), text.strip()
    path = tuple(key.split("."))
    if not key or any(not part for part in path):
        raise ConfigError(
            f"--set {item!r}: the key {key!r} is not a dotted name; write e.g. --set model.dtype=torch.bfloat16.",
            source="--set",
        )
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text  # a bare word such as torch.bfloat16 or local:/ckpts
    return Override(path=path, value=value, text=text, origin=f" (from --set {item})")


def apply_overrides(
    schema: dict[str, Any],
    variables: dict[str, Any],
    overrides: Iterable[str],
    top_hints: dict[str, Any],
    source: str,
) -> list[Override]:
    """Apply overrides in order to ``schema`` (top-level dicts) and ``variables``; both are mutated.

    Keys are checked against the schema first, so a typo gets the unknown-key error. A value for
    a string key is kept as the raw text when literal_eval read it as something else, so
    ``--set JOB_NAME=123`` names the job "123".
    """
    applied = []
    for item in overrides:
        ov = parse_override(item)
        head = ov.path[0]
        if len(ov.path) == 1 and head in JOB_NAME_KEYS:
            variables["JOB_NAME"] = ov.value if isinstance(ov.value, str) else ov.text
            applied.append(ov)
            continue
        if head.isupper():
            raise ConfigError(
                f"{source}: cannot override the variable '{head}'{ov.origin}: upper-case names are plain "
                f"Python variables whose values were already copied into the config dicts. Override the "
                f"dotted key that uses it instead, e.g. --set data.seq_len=4096.",
                key=head,
                source=source,
            )
        hint = hint_for_path(top_hints, list(ov.path), source, origin=ov.origin)
        value = ov.value
        if strip_optional(hint) is str and not (value is None or isinstance(value, str)):
            value = ov.text
        node = schema
        for part in ov.path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[ov.path[-1]] = value
        applied.append(ov)
    return applied
