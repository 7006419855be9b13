"""SIGTERM / SIGINT become a request to save after the current step and exit."""

from __future__ import annotations

import signal
import threading

CAUGHT = (signal.SIGTERM, signal.SIGINT)


class SignalCatcher:
    """Records the first SIGTERM/SIGINT; a second one gets the previous (normally fatal) behaviour."""

    def __init__(self, signals=CAUGHT):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Install the handlers; only possible (and only done) in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def _handle(self, signum, frame) -> None:
        # Kept minimal: the training loop notices `received` after the step and does the work.
        del frame
        if self.received is None:
            self.received = signum
        self.uninstall()  # a second signal stops the run at once

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""
