"""Sizes written as text ("80GB", "500MiB", "96e9"): one reader for every option that takes one."""

from __future__ import annotations

import re

# Decimal units as transformers' max_shard_size reads them; binary units by their IEC names.
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'5GB' -> 5e9 bytes, '500MiB' -> 500 * 2**20, '96e9' -> 96e9, an int -> itself.

    ValueError (with the accepted forms) for anything else; callers add the option's name.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    unit = match.group(2).upper() if match else None
    if unit in ("K", "M", "G", "T"):
        unit += "B"
    if not match or unit not in _UNITS:
        raise ValueError(f"cannot read the size {text!r}; write it like 5GB, 500MB, 2GiB or 96e9")
    return int(float(match.group(1)) * _UNITS[unit])
