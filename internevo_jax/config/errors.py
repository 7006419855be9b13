"""The one exception type of the config package and helpers that phrase its messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A problem in a config file, a ``--set`` override or a value derived from them.

    The message is the single paragraph shown to the user: it names the file, the dotted key
    and how to fix it. ``key`` and ``source`` are kept as attributes for programs.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        super().__init__(message)
        self.key = key
        self.source = source


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name`` (difflib), or None when nothing is close."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    # Case slips ("Data", "JOB_name") are the commonest typo; catch them before fuzzy matching.
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key_error(
    source: str,
    dotted: str,
    valid: Iterable[str],
    *,
    origin: str = "",
    hint: str = "",
) -> ConfigError:
    """ConfigError for a key the schema does not know, suggesting the closest valid one."""
    valid = sorted(valid)
    parent, _, leaf = dotted.rpartition(".")
    guess = closest(leaf, valid)
    where = f"under '{parent}'" if parent else "at the top level"
    msg = f"{source}: unknown key '{dotted}'{origin}."
    if guess is not None:
        suggestion = f"{parent}.{guess}" if parent else guess
        msg += f" Did you mean '{suggestion}'?"
    msg += f" Valid keys {where}: {', '.join(valid)}."
    if hint:
        msg += f" {hint}"
    return ConfigError(msg, key=dotted, source=source)
