"""docs/config_reference.md, generated from the schema: every key with its type, default and meaning.

Keys, types and defaults come from ``schema.py`` (whatever it holds when this runs), the meanings
from ``key_docs.py``, the keys without effect from ``compat.NO_EFFECT_KEYS`` and the refused
values from ``validate.UNSUPPORTED_FEATURES``. A schema field whose trailing comment starts with
"derived" shows that comment as its default ("derived: data.total_steps when absent").

    text = render_reference()              # the Markdown
    meaning_problems()                     # [] when every key has a meaning and no meaning is stale
    stale_reference_message(path)          # None when the file equals render_reference()

``tools/config_reference.py`` is the command line; tests/config/test_config_reference.py keeps
the committed file in sync.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import json
import math
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import key_docs, schema
from .compat import NO_EFFECT_KEYS
from .schema import DEFAULT_JOB_NAME, EXTRA_KEYS, MIB, SCALARS, SECTIONS, Config
from .typecheck import field_hints, strip_optional
from .validate import UNSUPPORTED_FEATURES

REFERENCE_PATH = "docs/config_reference.md"
KEY_DOCS_PATH = "internevo_jax/config/key_docs.py"
REGENERATE_COMMAND = "python tools/config_reference.py"
JOB_NAME = "JOB_NAME"


@dataclasses.dataclass(frozen=True)
class KeyRow:
    """One key of the reference: dotted name, rendered type and default, whether it is a group
    (a nested dict whose own keys follow it)."""

    key: str
    type: str
    default: str
    group: bool = False


# -- reading the schema ------------------------------------------------------------------------


@functools.cache
def trailing_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment at the end of its line in the class's source ("" parts dropped)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    by_line = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment = by_line.get(node.end_lineno or node.lineno)
            if comment:
                out[node.target.id] = comment
    return out


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def format_type(hint: Any) -> str:
    """A type hint in words a config author writes: int, float or None, dict, tuple of str, ..."""
    args = _union_args(hint)
    if args:
        words = [format_type(a) for a in args if a is not type(None)]
        if type(None) in args:
            words.append("None")
        return " or ".join(words)
    if hint is type(None):
        return "None"
    if hint is Any:
        return "any"
    if hint in (int, float, bool, str):
        return hint.__name__
    if dataclasses.is_dataclass(hint):
        return "dict"
    origin = typing.get_origin(hint) or hint
    if origin is dict:
        return "dict"
    if origin in (tuple, list):
        inner = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"{origin.__name__} of {format_type(inner[0])}" if inner else origin.__name__
    return getattr(hint, "__name__", str(hint))


def format_value(value: Any) -> str:
    """A default as it is written in a config file."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        items = [format_value(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _note(value: Any) -> str:
    """A readable size next to large round defaults: 536870912 -> (512 MiB), 65536.0 -> (2**16)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1024:
        return ""
    if isinstance(value, int):
        return f" ({value // MIB} MiB)" if value % MIB == 0 else ""
    exponent = math.log2(value)
    return f" (2**{int(exponent)})" if exponent.is_integer() else ""


def _default_cell(value: Any, comment: str, group: bool) -> str:
    if comment.lower().startswith("derived"):
        return comment
    if group:
        return "its keys below"
    return f"`{format_value(value)}`{_note(value)}"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def section_rows(cls: type, prefix: str) -> list[KeyRow]:
    """Every key of a section dataclass, nested groups followed by their own keys."""
    rows = []
    comments = trailing_comments(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, hint in field_hints(cls).items():
        key = f"{prefix}.{name}"
        nested = strip_optional(hint)
        group = dataclasses.is_dataclass(nested)
        default = _field_default(fields[name])
        rows.append(
            KeyRow(key, format_type(hint), _default_cell(default, comments.get(name, ""), group), group)
        )
        if group:
            rows.extend(section_rows(nested, key))
    return rows


def top_level_rows() -> list[KeyRow]:
    """JOB_NAME and the top-level scalar keys."""
    comments = trailing_comments(Config)
    rows = [KeyRow(JOB_NAME, "str", f"`{format_value(DEFAULT_JOB_NAME)}`")]
    for name, (hint, default) in SCALARS.items():
        rows.append(KeyRow(name, format_type(hint), _default_cell(default, comments.get(name, ""), False)))
    return rows


def extra_rows() -> list[KeyRow]:
    return [KeyRow(name, "any", "absent") for name in EXTRA_KEYS]


def documented_keys() -> list[str]:
    """Every key that needs a meaning, in reference order: the top level, each section's name and
    keys, the extra keys, then no-effect keys the schema does not hold (e.g. parallel.fsdp)."""
    keys = [row.key for row in top_level_rows()]
    for name, cls in SECTIONS.items():
        keys.append(name)
        keys.extend(row.key for row in section_rows(cls, name))
    keys.extend(row.key for row in extra_rows())
    keys.extend(sorted(set(NO_EFFECT_KEYS) - set(keys)))
    return list(dict.fromkeys(keys))


def covering_no_effect_key(key: str) -> str | None:
    """The NO_EFFECT_KEYS entry that covers ``key`` (itself or a parent), if any."""
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i])
        if candidate in NO_EFFECT_KEYS:
            return candidate
    return None


# -- checks ------------------------------------------------------------------------------------


def missing_meanings(docs: Mapping[str, str] | None = None) -> list[str]:
    """Keys the schema (or NO_EFFECT_KEYS) has that ``docs`` gives no meaning for."""
    docs = key_docs.KEY_DOCS if docs is None else docs
    return [k for k in documented_keys() if not str(docs.get(k, "")).strip()]


def unknown_meanings(docs: Mapping[str, str] | None = None) -> list[str]:
    """Keys ``docs`` describes that the schema no longer has."""
    docs = key_docs.KEY_DOCS if docs is None else docs
    known = set(documented_keys())
    return sorted(k for k in docs if k not in known)


def no_effect_mismatches(docs: Mapping[str, str] | None = None) -> list[str]:
    """Messages for entries whose "No effect here:" does not match NO_EFFECT_KEYS."""
    docs = key_docs.KEY_DOCS if docs is None else docs
    mark = key_docs.NO_EFFECT_MARK
    out = []
    for key, text in docs.items():
        if key in NO_EFFECT_KEYS and mark not in text:
            out.append(
                f"{key!r} is in NO_EFFECT_KEYS (internevo_jax/config/compat.py), so its entry must say "
                f"what it does in InternEvo, then {mark!r} and why it needs nothing in JAX"
            )
        elif key not in NO_EFFECT_KEYS and mark in text:
            out.append(
                f"{key!r} is not in NO_EFFECT_KEYS (internevo_jax/config/compat.py) but its entry says "
                f"{mark!r}; describe what the key does now"
            )
    return out


def meaning_problems(docs: Mapping[str, str] | None = None) -> list[str]:
    """Every problem of the meanings, one message each (empty when the reference can be written)."""
    problems = [
        f'config key {key!r} has no meaning: add an entry {key!r}: "..." (one or two sentences) to '
        f"KEY_DOCS in {KEY_DOCS_PATH}"
        for key in missing_meanings(docs)
    ]
    problems += [
        f"KEY_DOCS in {KEY_DOCS_PATH} describes {key!r}, which the config schema no longer has: remove "
        "the entry (or rename it to the key's new name)"
        for key in unknown_meanings(docs)
    ]
    problems += [f"{KEY_DOCS_PATH}: {m}" for m in no_effect_mismatches(docs)]
    known = set(documented_keys())
    problems += [
        f"EXTENSION_KEYS in {KEY_DOCS_PATH} names {key!r}, which the config schema does not have"
        for key in sorted(key_docs.EXTENSION_KEYS - known)
    ]
    return problems


# -- rendering ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """One table cell: one line; outside `code` spans, < and * are escaped so that "<run_dir>" and
    "*_FROM_HF" show as written; | is escaped everywhere (GitHub tables split on it)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # the even parts lie outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|")


def _key_cell(key: str) -> str:
    return f"`{key}`" + (" (extension)" if key in key_docs.EXTENSION_KEYS else "")


def _meaning_cell(key: str, docs: Mapping[str, str]) -> str:
    text = docs.get(key, "")
    cover = covering_no_effect_key(key)
    if cover == key:
        what, why = _split_no_effect(text)
        return f"{_cell(what)} **No effect here:** {_cell(why)}"
    if cover is not None:
        return f"**No effect** (see `{cover}`). {_cell(text)}"
    return _cell(text)


def _table(rows: list[KeyRow], docs: Mapping[str, str]) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for row in rows:
        out.append(
            f"| {_key_cell(row.key)} | {_cell(row.type)} | {_cell(row.default)} | {_meaning_cell(row.key, docs)} |"
        )
    return out


def _split_no_effect(text: str) -> tuple[str, str]:
    """An entry of a no-effect key -> (what it does in InternEvo, why it needs nothing here)."""
    before, _, after = text.partition(key_docs.NO_EFFECT_MARK)
    return before.strip(), after.strip()


HEADER = """\
# Config reference

<!-- Generated by `{command}` from the config schema; do not edit by hand. -->

Every key a config file may hold: its type, its default and what it does. Generated by
`{command}` from
* `internevo_jax/config/schema.py`: the keys, their types and defaults;
* `{key_docs}`: the meanings;
* `NO_EFFECT_KEYS` in `internevo_jax/config/compat.py`: the keys without effect in JAX;
* `UNSUPPORTED_FEATURES` in `internevo_jax/config/validate.py`: the refused values.

`{command} --check` and `tests/config/test_config_reference.py` fail when this
page is out of date. How a file is read, `--set` overrides, `_base_` configs, the `parallel` forms and the error
messages: [config.md](config.md). Coming from InternEvo: [from_internevo.md](from_internevo.md).

* **default**: InternEvo's (its `args_sanity_check`, model builders and demo configs), except for
  keys marked *(extension)*, which InternEvo does not have. "derived: ..." is computed from other
  keys when the key is absent; after loading, `cfg` holds the computed value.
* **type**: "int" takes whole numbers (`5e4` is read as 50000), "float" any number, "bool" only
  `True` / `False`; "dict" is a nested dict, its keys follow it. A misspelt key is an error naming
  the closest valid one.
* **No effect here**: accepted so that InternEvo's files run, reported once in the log, and listed
  with the reason in [Keys with no effect in JAX](#keys-with-no-effect-in-jax).

Sections: [top level](#top-level-keys),
{sections},
[other top-level keys](#other-top-level-internevo-keys), [no effect in JAX](#keys-with-no-effect-in-jax),
[refused values](#refused-values).
"""


def render_reference(docs: Mapping[str, str] | None = None) -> str:
    """The Markdown of docs/config_reference.md."""
    docs = key_docs.KEY_DOCS if docs is None else docs
    sections = ", ".join(f"[{name}](#{name})" for name in SECTIONS)
    lines = HEADER.format(command=REGENERATE_COMMAND, key_docs=KEY_DOCS_PATH, sections=sections).splitlines()
    lines += ["", "## Top-level keys", ""]
    lines += [
        "Module-level names of the config file. UPPER_CASE names are plain variables (kept in "
        "`cfg.variables`); `JOB_NAME` is the one the trainer reads.",
        "",
    ]
    lines += _table(top_level_rows(), docs)
    optional = getattr(schema, "OPTIONAL_SECTIONS", ())
    for name, cls in SECTIONS.items():
        intro = _cell(docs.get(name, ""))
        if name in optional:
            intro += f" Optional: without a `{name}` dict in the file, `cfg.{name}` is None."
        lines += ["", f"## {name}", "", intro, ""]
        lines += _table(section_rows(cls, name), docs)

    lines += ["", "## Other top-level InternEvo keys", ""]
    lines += [
        "Accepted at the top level of a file and kept as they are in `cfg.extra`; none of them changes "
        "training here.",
        "",
    ]
    lines += _table(extra_rows(), docs)

    lines += ["", "## Keys with no effect in JAX", ""]
    lines += [
        "They steer PyTorch / CUDA machinery or InternEvo features with no counterpart here. A key also "
        "covers its own keys (`parallel.fsdp` covers `parallel.fsdp.mode`). Each one a file sets is "
        "listed once in the log and in `cfg.no_effect_keys`.",
        "",
        "| key | in InternEvo | why it has no effect here |",
        "|---|---|---|",
    ]
    for key in sorted(NO_EFFECT_KEYS):
        what, why = _split_no_effect(docs.get(key, ""))
        lines.append(f"| `{key}` | {_cell(what)} | {_cell(why[:1].upper() + why[1:])} |")

    lines += ["", "## Refused values", ""]
    lines += [
        'Keys accepted with their "off" value and refused, with this message, when they ask for a '
        "feature this project lacks. Other impossible values (sizes that do not divide, unknown "
        "dtypes, modes and backends, ...) are refused with a message naming the key; see "
        "[config.md](config.md#errors).",
        "",
        "| key | refused: the message |",
        "|---|---|",
    ]
    for key, _, message in UNSUPPORTED_FEATURES:
        lines.append(f"| `{key}` | {_cell(message)} |")
    return "\n".join(lines) + "\n"


def stale_reference_message(path: str | Path, docs: Mapping[str, str] | None = None) -> str | None:
    """None when the file at ``path`` equals the generated reference, else a message that says how
    it differs and which command regenerates it."""
    expected = render_reference(docs)
    path = Path(path)
    try:
        actual = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{path} does not exist; generate it with `{REGENERATE_COMMAND}`."
    if actual == expected:
        return None
    diff = list(
        difflib.unified_diff(
            actual.splitlines(),
            expected.splitlines(),
            f"{path} (committed)",
            f"{path} (from the schema)",
            lineterm="",
            n=0,
        )
    )
    shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
    return (
        f"{path} is out of date with the config schema and {KEY_DOCS_PATH}; regenerate it with "
        f"`{REGENERATE_COMMAND}` and commit the result. Differences:\n{shown}"
    )
