"""When the storage of a save fails: the write probe at start, orbax's own reports, what a failed save leaves.

* `check_writable(folder, ...)`: create and remove a small probe file, so that a read-only or full
  folder is refused at start-up with one paragraph instead of failing at the first save.
* `is_storage_failure(err)`: the error says the folder cannot be written (read-only file system,
  no permission, disk full, quota, I/O error).
* `QuietOrbax`: while saves run, orbax's own tracebacks of such failures are dropped (the save
  reports them as one CheckpointError); every other record passes. `quiet_closed_loop_callbacks`:
  what a failed TensorStore read or write reports after the failure (callbacks that find orbax's
  event loop closed, asyncio's never-retrieved write errors) is not printed.
* `abandon(mngr)`: stop the threads a failed orbax save left behind (writers waiting for a
  directory that was never created, writes still in flight), so none keeps the interpreter from
  exiting, and close what orbax opened without waiting for the dead write again.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
import re
import sys
import threading
import time

from internevo_jax.checkpoint.errors import CheckpointError, cause_chain, first_line
from internevo_jax.writable import unwritable_reason

logger = logging.getLogger("internevo_jax")

# How long a failed save's leftover orbax threads get to end once released.
ABANDON_TIMEOUT_S = 30.0

_STORAGE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EIO}
_STORAGE_TEXTS = (
    "Read-only file system",
    "Permission denied",
    "No space left on device",
    "Disk quota exceeded",
    "Input/output error",
)


def is_storage_failure(err: BaseException | None) -> bool:
    """True when `err` (or anything in its cause chain) says the folder cannot be written.

    TensorStore reports file-system errors as ValueErrors carrying the OS message, so the text is
    checked as well as errno.
    """
    for e in cause_chain(err):
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            return True
        text = str(e)
        if any(t in text for t in _STORAGE_TEXTS):
            return True
    return False


_OS_REASON = re.compile(r':\s*([^:"]+?)\s*\[os_error_code=')
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


def storage_reason(err: BaseException) -> str:
    """What the file system said, short: "Read-only file system: '/ckpts/4.orbax-checkpoint-tmp'".

    TensorStore words EROFS as PERMISSION_DENIED and puts the OS text last, after long paths; its
    OS text and the file are taken from there.
    """
    for e in cause_chain(err):
        if isinstance(e, OSError) and e.strerror:
            return f"{e.strerror}: {e.filename!r}" if e.filename else e.strerror
        text = str(e)
        reason = _OS_REASON.search(text)
        if reason is not None:
            paths = _QUOTED_PATH.findall(text)
            return f"{reason.group(1)}: {paths[-1]!r}" if paths else reason.group(1)
    return first_line(err)


def check_writable(folder: str, *, what: str, fix: str) -> None:
    """CheckpointError unless a file can be created, written and removed in `folder` (which exists).

    `what` names the folder in the message ("the checkpoint folder"), `fix` is the sentence that
    says what to change.
    """
    reason = unwritable_reason(folder)  # the probe the tools use too
    if reason is not None:
        raise CheckpointError(
            f"Cannot write to {what} {folder}: {reason}. Checkpoints could not be saved there. {fix}"
        )


def _signaling_thread_class():
    try:
        from orbax.checkpoint._src.futures import future
    except ImportError:  # another orbax layout: nothing to release
        return None, None
    return getattr(future, "_SignalingThread", None), getattr(future, "set_signals", None)


def _orbax_threads() -> list[threading.Thread]:
    cls, _ = _signaling_thread_class()
    if cls is None:
        return []
    return [t for t in threading.enumerate() if isinstance(t, cls) and t.is_alive()]


def abandon(mngr, timeout_s: float = ABANDON_TIMEOUT_S) -> list[str]:
    """Stop what a failed save of the orbax CheckpointManager `mngr` left running; returns the names
    of threads still alive after `timeout_s` (normally none).

    Orbax's writer threads wait for signals (e.g. "the step folder exists") that a failed save never
    sends; they are not daemons and would hold the interpreter at exit until orbax's timeout. Each is
    cancelled and then released, so it returns without writing. Then the parts of `mngr` are closed
    one by one: its own close() would wait for, and raise, the failed write again.
    """
    cls, set_signals = _signaling_thread_class()
    threads = _orbax_threads()
    for t in threads:
        with contextlib.suppress(Exception):
            t.cancel()
    with contextlib.suppress(Exception):
        mngr._checkpointer.cancel()  # the checkpointer's own background thread stops waiting
    for t in threads:
        receive = getattr(t, "_receive_signals", None)
        operation_id = getattr(t, "_operation_id", None)
        if set_signals is not None and receive and operation_id is not None:
            with contextlib.suppress(Exception):
                set_signals(receive, operation_id=operation_id)
    deadline = time.monotonic() + timeout_s
    for t in threads:
        threading.Thread.join(t, max(0.0, deadline - time.monotonic()))
        if not t.is_alive():  # a cancelled thread never ran its coroutine: close it without a warning
            _close_unstarted(getattr(t, "_target", None), set())
    for part in (
        "_checkpointer",
        "_non_blocking_metadata_store",
        "_blocking_metadata_store",
        "_checkpoint_deleter",
    ):
        obj = getattr(mngr, part, None)
        if obj is not None and hasattr(obj, "close"):
            with contextlib.suppress(Exception):
                obj.close()
    left = [t.name for t in _orbax_threads()]
    if left:
        logger.warning(
            "after the failed save, orbax threads are still running (%s); the process may wait for them "
            "at exit",
            ", ".join(left),
        )
    return left


def _close_unstarted(obj, seen: set, depth: int = 0) -> None:
    """Close the coroutines that `obj` (a cancelled thread's target) holds and never started, and
    those they were handed, so none is reported as "never awaited" when collected."""
    if obj is None or depth > 8 or id(obj) in seen:
        return
    seen.add(id(obj))
    if inspect.iscoroutine(obj):
        if inspect.getcoroutinestate(obj) == inspect.CORO_CREATED:
            for value in list(obj.cr_frame.f_locals.values()):
                _close_unstarted(value, seen, depth + 1)
            obj.close()
    elif inspect.isfunction(obj):
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                _close_unstarted(cell.cell_contents, seen, depth + 1)
    elif isinstance(obj, functools.partial):
        for value in (obj.func, *obj.args, *obj.keywords.values()):
            _close_unstarted(value, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _close_unstarted(value, seen, depth + 1)


class _FailureRecords(logging.Filter):
    """Drops the records that carry a storage failure's traceback (the save reports it once itself)
    and, with `cancelled`, those of the writes a failed save cancelled."""

    def __init__(self, cancelled: bool = True):
        super().__init__()
        self.cancelled = cancelled

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        return not (is_storage_failure(exc) or (self.cancelled and _is_cancelled(exc)))


def _is_cancelled(err: BaseException) -> bool:
    import asyncio
    import concurrent.futures

    return any(
        isinstance(e, (concurrent.futures.CancelledError, asyncio.CancelledError)) for e in cause_chain(err)
    )


def _closed_loop_callback(unraisable) -> bool:
    """A TensorStore write finishing after its failed save closed orbax's event loop: its callback
    finds the loop closed. Noise after a failure that is reported anyway."""
    exc = unraisable.exc_value
    if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
        return False
    tb = unraisable.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


def quiet_closed_loop_callbacks() -> None:
    """From now on, do not print what a failed TensorStore read or write reports after its failure:
    the callbacks that find orbax's event loop closed, and asyncio's "Task exception was never
    retrieved" for the sibling writes of a failed save (the storage failure itself).

    They arrive after the failure was reported, some even after the error message. Every other
    unraisable exception and asyncio record is printed as before. Installed once per process and
    kept: the last of them may come at any time before exit (when the tasks are collected).
    """
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    logging.getLogger("asyncio").addFilter(_FailureRecords(cancelled=False))
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _closed_loop_callback(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook


_hook_installed = False


class QuietOrbax:
    """While installed, orbax's (absl's) records of storage failures are not printed (the save
    reports them as one CheckpointError); every other record is. Install once per manager, remove in
    its finalize()."""

    def __init__(self):
        self._filter = _FailureRecords()
        self._installed = False

    def install(self) -> None:
        quiet_closed_loop_callbacks()
        if self._installed:
            return
        self._installed = True
        logging.getLogger("absl").addFilter(self._filter)

    def remove(self) -> None:
        if not self._installed:
            return
        self._installed = False
        logging.getLogger("absl").removeFilter(self._filter)
