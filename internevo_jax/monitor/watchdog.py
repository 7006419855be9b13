"""A hang watchdog: when no step finishes for a while, log every thread's stack and say so.

The training thread calls `beat()` whenever it makes progress; the first beat arms the watchdog
(as in InternEvo, whose stuck check starts once a step has finished: before that, start-up and
compilation take as long as they take). When `timeout_s` seconds pass without a beat, the
watchdog thread logs the stacks of all of the process's threads (at ERROR, so
every process's log has them) and calls `on_hang(elapsed_s, step)` once; the next beat re-arms it
and calls `on_resume(stalled_s, step)`. The thread is a daemon and `stop()` ends it: it never holds
up the end of a run or the interpreter's exit.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable

from internevo_jax.monitor.writers import logger


def thread_stacks() -> str:
    """The current stack of every thread of this process, one block per thread."""
    names = {t.ident: t.name for t in threading.enumerate()}
    blocks = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        blocks.append(f'Thread "{names.get(ident, "?")}" (id {ident}), most recent call last:\n{stack}')
    return "\n".join(blocks)


class HangWatchdog:
    """Fires once per stall of `timeout_s` seconds without a `beat()`; see the module docstring."""

    def __init__(
        self,
        timeout_s: float,
        *,
        on_hang: Callable[[float, int | None], None] | None = None,
        on_resume: Callable[[float, int | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be greater than 0, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self.on_hang, self.on_resume, self.clock = on_hang, on_resume, clock
        self.fired = 0  # how many stalls were reported
        self._cond = threading.Condition()
        self._last: float | None = None  # the last beat; None until the first one arms the watchdog
        self._step: int | None = None
        self._hung_since: float | None = None  # the last beat before the current stall
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="internevo-hang-watchdog", daemon=True)

    def start(self) -> HangWatchdog:
        """Start the thread; the first `beat()` arms it."""
        self._thread.start()
        return self

    def beat(self, step: int | None = None) -> None:
        """Progress: re-arm the timer (`step`: the newest finished step, for the messages)."""
        resumed = None
        with self._cond:
            now = self.clock()
            if self._hung_since is not None:
                resumed, self._hung_since = now - self._hung_since, None
            if self._last is None or resumed is not None:
                self._cond.notify()  # the thread waits without a deadline until armed or re-armed
            self._last = now
            if step is not None:
                self._step = step
            step = self._step
        if resumed is not None:
            logger.warning("training made progress again after a stall of %.0f s", resumed)
            if self.on_resume is not None:
                self._call(self.on_resume, resumed, step)

    def stop(self) -> None:
        """End the thread (waits at most a second; the thread is a daemon either way)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if self._last is None or self._hung_since is not None:
                    self._cond.wait()  # until a beat arms or re-arms the watchdog, or stop
                    continue
                remaining = self._last + self.timeout_s - self.clock()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._hung_since = self._last
                elapsed, step = self.clock() - self._last, self._step
                self.fired += 1
            # outside the lock: the training thread's beat must never wait for the dump
            logger.error(
                "no training progress for %.0f s (hang timeout %g s; last finished step: %s). "
                "Stacks of all threads of this process:\n%s",
                elapsed,
                self.timeout_s,
                "none" if step is None else step,
                thread_stacks(),
            )
            if self.on_hang is not None:
                self._call(self.on_hang, elapsed, step)

    @staticmethod
    def _call(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a failing notifier must not end the watchdog
            logger.exception("hang watchdog: its notifier failed")
