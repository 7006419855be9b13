"""Run control: after each step, ask the stop file and the signal catcher whether to save (and exit)."""

from __future__ import annotations

import dataclasses

from internevo_jax.checkpoint import distributed
from internevo_jax.checkpoint.deadlines import Deadline, Deadlines
from internevo_jax.checkpoint.policy import Request
from internevo_jax.trainer.run_control.signals import SignalCatcher
from internevo_jax.trainer.run_control.stopfile import StopFile


@dataclasses.dataclass(frozen=True)
class Poll:
    """Run control's answer for one step: the request, why it was made (for the log), and who asked."""

    request: Request = Request.NONE
    reason: str = "schedule"  # "signal", "stop file", or "schedule" when nothing was requested
    asked_by: str = ""  # "received SIGTERM" or "stop file <path>"

    @property
    def exit(self) -> bool:
        return self.request == Request.SAVE_AND_EXIT


class RunControl:
    """The stop file (`ckpt.stop_file_path`) and SIGTERM/SIGINT, polled once per step.

    Signal handlers go in at the first poll, so a run that fails before training leaves none behind;
    `close()` puts the previous ones back. In a multi-process run each poll waits for the other
    processes at most `agreement` (ckpt.agreement_timeout_s; None: its default).
    """

    def __init__(self, stop_file_path: str | None, *, catch_signals: bool, agreement: Deadline | None = None):
        self.stop_file = StopFile(stop_file_path) if stop_file_path else None
        self.signals: SignalCatcher | None = None
        self._want_signals = catch_signals
        self._agreement = agreement or Deadlines.default().agreement

    def poll(self, step: int) -> Poll:
        """What the user asks for after `step` steps; the same answer on every process."""
        if self._want_signals:
            self._want_signals = False
            catcher = SignalCatcher()
            if catcher.install():
                self.signals = catcher
        stop_action = self.stop_file.action(step) if self.stop_file else Request.NONE
        signalled = int(bool(self.signals and self.signals.received))
        # Every process must take the same decision: a save is a collective operation.
        signalled, stop_action = distributed.agree_max(
            [signalled, int(stop_action)],
            self._agreement,
            what=f"the other processes to agree on a stop or save after step {step}",
        )
        if signalled:
            name = self.signals.name if self.signals is not None else "a signal on another process"
            return Poll(Request.SAVE_AND_EXIT, "signal", f"received {name}")
        if stop_action:
            return Poll(Request(stop_action), "stop file", f"stop file {self.stop_file.path}")
        return Poll()

    def close(self) -> None:
        """Put the previous signal handlers back."""
        if self.signals is not None:
            self.signals.uninstall()
