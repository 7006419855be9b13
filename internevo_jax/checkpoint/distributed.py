"""The few multi-process agreements checkpointing needs; all are no-ops in a single process."""

from __future__ import annotations

import itertools

import jax
import numpy as np

_barrier_ids = itertools.count()
_agree_ids = itertools.count()
_AGREE_PREFIX = "internevo_jax_agree/"
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
    """Element-wise maximum over processes; every process must call it in the same order.

    Runs over the distributed runtime's key-value store, not a device collective: the run-control
    poll calls it every step, and a device collective would wait for the queued steps to finish.
    """
    if jax.process_count() == 1:
        return list(values)
    client = _kv_client()
    if client is None:  # no coordination service (e.g. initialised by another runtime)
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
        return [int(v) for v in np.asarray(gathered).reshape(jax.process_count(), -1).max(axis=0)]
    round_id = next(_agree_ids)
    me = jax.process_index()
    client.key_value_set(f"{_AGREE_PREFIX}{round_id}/{me}", ",".join(str(int(v)) for v in values))
    rows = [
        [
            int(x)
            for x in client.blocking_key_value_get(
                f"{_AGREE_PREFIX}{round_id}/{p}", BARRIER_TIMEOUT_S * 1000
            ).split(",")
        ]
        for p in range(jax.process_count())
    ]
    if round_id >= 2:
        # everyone has read round - 2: each process set round - 1 only after reading it
        client.key_value_delete(f"{_AGREE_PREFIX}{round_id - 2}/{me}")
    return [max(column) for column in zip(*rows)]


def _kv_client():
    from jax._src import distributed as jax_distributed  # the runtime's client: no public accessor

    return getattr(jax_distributed.global_state, "client", None)


def from_primary(values: list[int]) -> list[int]:
    """Process 0's values on every process (main thread only)."""
    if jax.process_count() == 1:
        return list(values)
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values, np.int64)))]
