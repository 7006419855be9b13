"""The few multi-process agreements checkpointing needs; all are no-ops in a single process."""

from __future__ import annotations

import itertools

import jax
import numpy as np

_barrier_ids = itertools.count()
BARRIER_TIMEOUT_S = 3600  # a barrier may wait for another process's upload of a large checkpoint


def is_primary() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches this point.

    Uses the distributed runtime's key-value barrier, not a device collective, so it is safe to call
    from the background thread that finishes a save while the main thread keeps training.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    key = f"internevo_jax_ckpt:{name}:{next(_barrier_ids)}"
    multihost.get_barrier_sync_fn()(key=key, timeout_ms=BARRIER_TIMEOUT_S * 1000)


def agree_max(values: list[int]) -> list[int]:
    """Element-wise maximum over processes (main thread only: this is a device collective)."""
    if jax.process_count() == 1:
        return list(values)
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
    return [int(v) for v in np.asarray(gathered).reshape(jax.process_count(), -1).max(axis=0)]


def from_primary(values: list[int]) -> list[int]:
    """Process 0's values on every process (main thread only)."""
    if jax.process_count() == 1:
        return list(values)
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values, np.int64)))]
