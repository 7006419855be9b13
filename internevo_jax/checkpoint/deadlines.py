"""Deadlines of the waits of saving, uploading, reading and the processes' agreements.

Every such wait ends by a deadline that a `ckpt.*_timeout_s` key sets (docs/checkpoint.md,
"Deadlines"); a wait that runs long logs what it waits for and how long it waits at most
(`logged_wait`), and one that runs out raises an error naming what it waited for and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from internevo_jax.checkpoint.errors import CheckpointError, StorageUnreachable

logger = logging.getLogger("internevo_jax")
T = TypeVar("T")

# How often a long wait logs that it is still waiting: the other processes and a save's background
# work are waited for in minutes, an S3 request is answered in milliseconds by a healthy endpoint.
LOG_EVERY_S = 30.0
S3_LOG_EVERY_S = 5.0
# The pause before the second try of an S3 operation (doubled after each).
RETRY_BACKOFF_S = 2.0


class DeadlineExceeded(CheckpointError):
    """A wait ran past its deadline; the message names what was waited for and the key that sets it."""


class StorageOutOfTime(StorageUnreachable):
    """An S3 upload ran past its deadline (ckpt.upload_timeout_s): reported as not saved, not retried."""


@dataclasses.dataclass(frozen=True)
class Deadline:
    """The longest a wait may last, and the config key that sets it."""

    seconds: float
    key: str

    def __str__(self) -> str:
        return f"{self.seconds:g} s ({self.key})"

    def start(self) -> Countdown:
        return Countdown(self, time.monotonic())


@dataclasses.dataclass(frozen=True)
class Countdown:
    """A deadline that started counting at `started` (time.monotonic())."""

    deadline: Deadline
    started: float

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return max(0.0, self.deadline.seconds - self.elapsed())

    def expired(self) -> bool:
        return self.left() <= 0.0


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """The host-level deadlines of a run's checkpointing, read from its `ckpt` section."""

    agreement: Deadline  # the processes meeting: per-step agreement, start-up checks, restores
    save: Deadline  # a save's background work, and the processes meeting inside it
    upload: Deadline  # a save's whole S3 upload

    @classmethod
    def from_config(cls, ck) -> Deadlines:
        return cls(
            agreement=Deadline(float(ck.agreement_timeout_s), "ckpt.agreement_timeout_s"),
            save=Deadline(float(ck.save_timeout_s), "ckpt.save_timeout_s"),
            upload=Deadline(float(ck.upload_timeout_s), "ckpt.upload_timeout_s"),
        )

    @classmethod
    def default(cls) -> Deadlines:
        from internevo_jax.config.schema import CkptConfig

        return cls.from_config(CkptConfig())


def retrying(what: str, fn: Callable[[], T], attempts: int, until: Countdown | None = None) -> T:
    """fn(), tried `attempts` times (ckpt.s3_attempts) with doubling pauses while the storage is
    unreachable; `what` names the operation in the log ("uploading for the checkpoint of step 4").
    With `until` (an upload's deadline) no try starts past it: when the pause before the next try
    would end after it, it gives up at once."""
    delay = RETRY_BACKOFF_S
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except StorageOutOfTime:
            raise
        except StorageUnreachable as err:
            if attempt < attempts and until is not None and until.left() <= delay:
                raise StorageOutOfTime(
                    f"{err} No further try: the upload did not finish within {until.deadline}; raise "
                    f"{until.deadline.key} for large checkpoints or slow links."
                ) from err
            if attempt == attempts:
                raise
            logger.warning(
                "%s failed (attempt %d of %d, ckpt.s3_attempts): %s Retrying in %.1fs.",
                what,
                attempt,
                attempts,
                err,
                delay,
            )
            time.sleep(delay)
            delay *= 2
    raise ValueError(f"attempts must be 1 or more, got {attempts}")


@contextlib.contextmanager
def logged_wait(
    what: str,
    limit: Deadline | str,
    *,
    every_s: float | None = None,
    level: int = logging.WARNING,
    progress: Callable[[], str] | None = None,
) -> Iterator[None]:
    """While the block runs, log "still waiting for <what>" every `every_s` seconds (LOG_EVERY_S).

    `limit` says how long the wait lasts at most: a Deadline, or a sentence for waits bounded by
    several settings; `progress` (optional) adds how far the work has come.
    """
    every = LOG_EVERY_S if every_s is None else every_s
    limit_text = f"gives up after {limit}" if isinstance(limit, Deadline) else limit
    started = time.monotonic()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every):
            extra = f", {progress()}" if progress is not None else ""
            logger.log(
                level,
                "still waiting for %s: %.0f s so far%s; %s",
                what,
                time.monotonic() - started,
                extra,
                limit_text,
            )

    watcher = threading.Thread(target=watch, name="wait-log", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
