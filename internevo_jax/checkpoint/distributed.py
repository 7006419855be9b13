"""The few multi-process agreements checkpointing needs; all are no-ops in a single process.

Each waits for the other processes at most the Deadline it is given (a `ckpt.*_timeout_s` key),
logs while it waits, and at expiry raises DeadlineExceeded naming the processes that did not arrive.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable

import jax
import numpy as np

from internevo_jax.checkpoint.deadlines import Deadline, DeadlineExceeded, logged_wait

_barrier_ids = itertools.count()
_agree_ids = itertools.count()
_primary_ids = itertools.count()
_AGREE_PREFIX = "internevo_jax_agree/"
_PRIMARY_PREFIX = "internevo_jax_primary/"


def is_primary() -> bool:
    return jax.process_index() == 0


def _timeout_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _timed_out(err: BaseException) -> bool:
    return "DEADLINE_EXCEEDED" in str(err)


def _expired(what: str, deadline: Deadline, missing: list[int] | None) -> DeadlineExceeded:
    if missing:
        names = ", ".join(str(p) for p in missing)
        who = f"process{'es' if len(missing) > 1 else ''} {names} did not arrive"
    else:
        who = "not every process arrived"
    return DeadlineExceeded(
        f"Process {jax.process_index()} of {jax.process_count()} waited {deadline.seconds:g} s for {what}, "
        f"but {who}: it may have failed or hung (look at its log), or it is still busy. Raise "
        f"{deadline.key} if the processes are only slow (e.g. writing, uploading or downloading a "
        f"large checkpoint)."
    )


@contextlib.contextmanager
def _bounded(what: str, deadline: Deadline, missing: Callable[[BaseException], list[int] | None]):
    """Log while the block waits for the other processes; turn the runtime's time-out into
    DeadlineExceeded naming what was waited for and the processes `missing(err)` finds absent."""
    with logged_wait(what, deadline):
        try:
            yield
        except Exception as err:
            if not _timed_out(err):
                raise
            raise _expired(what, deadline, missing(err)) from err


def _absent_from_barrier(err: BaseException) -> list[int]:
    """The processes a timed-out barrier names ("Some timed out task names:" then one per line)."""
    match = re.search(r"timed out task names:\s*\n(.*?)(?:\n\s*\n|$)", str(err), re.S)
    if not match:
        return []
    found = {int(m.group(1)) for line in match.group(1).splitlines() if (m := re.search(r"(\d+)\s*$", line))}
    return sorted(found)


def barrier(name: str, deadline: Deadline) -> None:
    """Wait until every process reaches this point, at most `deadline`.

    Uses the distributed runtime's key-value barrier, not a device collective, so it is safe to call
    from the background thread that finishes a save while the main thread keeps training.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    key = f"internevo_jax_ckpt:{name}:{next(_barrier_ids)}"
    what = f"the other processes at the checkpoint step '{name}'"
    with _bounded(what, deadline, _absent_from_barrier):
        multihost.get_barrier_sync_fn()(key=key, timeout_ms=_timeout_ms(deadline.seconds))


def agree_max(
    values: list[int], deadline: Deadline, *, what: str = "the other processes to agree"
) -> list[int]:
    """Element-wise maximum over processes; every process must call it in the same order.

    `what` names the wait in its log lines and its error ("the other processes to agree on ...").

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
    texts = _gather(client, f"{_AGREE_PREFIX}{round_id}/", range(jax.process_count()), deadline, what)
    rows = [[int(x) for x in text.split(",")] for text in texts]
    if round_id >= 2:
        # everyone has read round - 2: each process set round - 1 only after reading it
        client.key_value_delete(f"{_AGREE_PREFIX}{round_id - 2}/{me}")
    return [max(column) for column in zip(*rows)]


def _gather(client, prefix: str, processes, deadline: Deadline, what: str) -> list[str]:
    """The values the processes set under `prefix`, waiting for them at most `deadline` in all."""
    countdown = deadline.start()
    out = []
    with _bounded(what, deadline, lambda _: _absent_keys(client, prefix, processes)):
        for p in processes:
            out.append(client.blocking_key_value_get(f"{prefix}{p}", _timeout_ms(countdown.left())))
    return out


def _absent_keys(client, prefix: str, processes) -> list[int] | None:
    try:
        present = {key.rsplit("/", 1)[-1] for key, _ in client.key_value_dir_get(prefix)}
    except Exception:  # noqa: BLE001 - only to name the missing processes
        return None
    return [p for p in processes if str(p) not in present]


def _kv_client():
    from jax._src import distributed as jax_distributed  # the runtime's client: no public accessor

    return getattr(jax_distributed.global_state, "client", None)


def from_primary(values: list[int], deadline: Deadline, *, what: str = "process 0's answer") -> list[int]:
    """Process 0's values on every process; every process must call it in the same order.

    `what` names the wait in its log lines and its error ("process 0's ...").
    """
    if jax.process_count() == 1:
        return list(values)
    client = _kv_client()
    if client is None:
        from jax.experimental import multihost_utils

        return [
            int(v) for v in np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values, np.int64)))
        ]
    key = f"{_PRIMARY_PREFIX}{next(_primary_ids)}"
    if is_primary():
        client.key_value_set(key, ",".join(str(int(v)) for v in values))
        return [int(v) for v in values]
    with _bounded(what, deadline, lambda _: [0]):
        text = client.blocking_key_value_get(key, _timeout_ms(deadline.seconds))
    return [int(x) for x in text.split(",")]
