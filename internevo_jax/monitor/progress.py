"""A progress bar for interactive runs: steps done of the total, ETA, tokens/s and loss (rich).

It is a metrics writer like the others. Log lines keep printing above the bar: while it is shown,
the package logger's console handlers write through rich's redirected stderr, which draws them above
the live bar instead of through it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from internevo_jax.monitor.record import TGS_KEY
from internevo_jax.monitor.writers import logger


def wants_progress_bar(setting: bool | None) -> bool:
    """monitor.progress_bar: True/False as given; None shows the bar only when stdout is a terminal,
    so logs written to files and pipes stay clean."""
    if setting is not None:
        return setting
    return sys.stdout.isatty()


class ProgressBar:
    """A metrics writer that moves a rich progress bar to each step record's step.

    `done` steps are already done when the run starts (a resumed run), `total` is the last step;
    `devices` turns the per-device tgs of a record into tokens/s of the whole run."""

    def __init__(self, *, done: int, total: int, devices: int, console=None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.devices = devices
        self._progress = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tokens/s  loss {task.fields[loss]}"),
            console=console,
        )
        self._task = self._progress.add_task("train", total=total, completed=done, tokens="-", loss="-")
        self._progress.start()
        self._handlers = _route_log_handlers(sys.stderr)

    def write(self, record: Mapping[str, object], kind: str = "step") -> None:
        if kind != "step":
            return
        fields = {"completed": int(record["step"]) + 1}
        if isinstance(record.get("loss"), (int, float)):
            fields["loss"] = f"{record['loss']:.4f}"
        if isinstance(record.get(TGS_KEY), (int, float)):
            fields["tokens"] = f"{record[TGS_KEY] * self.devices:,.0f}"
        self._progress.update(self._task, **fields)

    def close(self) -> None:
        self._progress.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)


def _route_log_handlers(stream) -> list[tuple[logging.StreamHandler, object]]:
    """Point the package logger's console handlers at `stream`; returns (handler, old stream)."""
    routed = []
    for handler in logger.handlers:
        old = getattr(handler, "stream", None)
        if (
            type(handler) is logging.StreamHandler
            and old is not stream
            and old in (sys.__stderr__, sys.__stdout__)
        ):
            handler.setStream(stream)
            routed.append((handler, old))
    return routed
