"""Read metrics lines back from a training log: ours (`key=value,` pairs) and InternEvo's.

InternEvo writes `f"{key}={value} "` for every metric, so its separators are spaces, one key holds a
space itself (`tgs (tokens/gpu/second)`), and grad_norm is a dict per parameter group
(`grad_norm={'0_default': 1.2}`). Older InternEvo logs and ours separate pairs with commas. One
parser takes all three: a pair starts at a `key=` that follows a separator outside any braces.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable

# A metric name: word characters and slashes (tokens/en, tgs/last_tgs_1), optionally followed by a
# parenthesised unit, as in "tgs (tokens/gpu/second)".
_KEY = re.compile(r"[A-Za-z_][\w/.]*(?: \([^()=]*\))?=")
_FIRST_KEYS = ("tflops=", "step=")  # where a metrics line starts, after the logger's prefix


def parse_metrics_line(line: str) -> dict[str, object] | None:
    """The metrics of one step line as {key: value}, or None for any other line (validation lines,
    messages). Numbers become floats (ints stay ints); a grad_norm dict becomes the global norm
    over its groups; other values stay strings."""
    if "validation" in line or "Evaluation" in line:
        return None
    starts = [i for i in (line.find(k) for k in _FIRST_KEYS) if i >= 0]
    if not starts:
        return None
    text = line[min(starts) :].rstrip()
    pairs = _split_pairs(text)
    if "step" not in pairs:
        return None
    return {key: _value(key, raw) for key, raw in pairs.items()}


def _split_pairs(text: str) -> dict[str, str]:
    """Split `k=v` pairs at separators (comma or space) that are outside braces and brackets."""
    pairs: dict[str, str] = {}
    depth, i, key, value_start = 0, 0, None, 0
    while i <= len(text):
        at_boundary = i == 0 or (depth == 0 and text[i - 1] in ", ")
        match = _KEY.match(text, i) if at_boundary and i < len(text) else None
        if match or i == len(text):
            if key is not None:
                pairs[key] = text[value_start:i].rstrip(", ")
            if match:
                key, value_start = match.group()[:-1], match.end()
                i = match.end()
                continue
            break
        depth += text[i] in "{[("
        depth -= text[i] in "}])"
        i += 1
    return pairs


def _value(key: str, raw: str) -> object:
    raw = raw.strip()
    try:
        number = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        try:
            return float(raw)  # nan, inf
        except ValueError:
            return raw
    if isinstance(number, dict) and key == "grad_norm":
        # InternEvo logs one norm per parameter group; the global norm is their root sum of squares
        norms = [float(v) for v in number.values() if isinstance(v, (int, float))]
        return math.sqrt(sum(v * v for v in norms)) if norms else math.nan
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return raw
    return number


def read_metrics_log(lines: Iterable[str]) -> dict[int, dict[str, object]]:
    """step -> metrics of every step line; a step logged twice (a resumed run) keeps its last line."""
    out: dict[int, dict[str, object]] = {}
    for line in lines:
        record = parse_metrics_line(line)
        if record is not None and isinstance(record["step"], int):
            out[record["step"]] = record
    return out
