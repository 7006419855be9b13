"""Abstract TPU devices of a named slice, for compiling ahead of time on any host (libtpu needed).

`topology_devices("v5p:4x4x4")` gives the 64 devices of that slice as jax sees them on a TPU VM
(ids, coordinates, one per chip or core), without any TPU present: a mesh built over them lowers
and compiles with the real TPU compiler, and `compiled.memory_analysis()` is that compiler's
buffer assignment. How libtpu starts on a host without chips is set in internevo_jax/platforms.py.
"""

from __future__ import annotations

import jax

from internevo_jax.config import ConfigError

EXAMPLES = "v5e:2x2, v5e:16x16 (v5e-256), v5p:2x2x1, v5p:4x4x4 (64 chips), v6e:4x4, v4:2x2x2"


def topology_devices(name: str, *, flag: str = "--topology") -> list[jax.Device]:
    """The devices of TPU slice `name` ("<generation>:<chips per dimension>"); a name libtpu does
    not know, or a missing libtpu, is a ConfigError naming `flag` and the fix."""
    from jax.experimental import topologies

    if not name or ":" not in name:
        # libtpu reads an empty name as its default (a v2 slice): refuse it rather than guess.
        raise ConfigError(
            f"{flag}={name!r} is not a TPU topology name; write <generation>:<chips per dimension>, "
            f"e.g. {EXAMPLES}.",
            key=flag,
        )
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
    except RuntimeError as err:  # jax's JaxRuntimeError from libtpu, or jax's own 'not installed'
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (
            "install libtpu (pip install 'internevo_jax[tpu]', or jax[tpu]) to compile for TPU slices"
            if "libtpu" in first.lower() or "not installed" in first.lower()
            else f"use a slice shape libtpu knows, e.g. {EXAMPLES}"
        )
        raise ConfigError(
            f"{flag}={name!r}: the TPU compiler refused it ({first}); {hint}.", key=flag
        ) from None
