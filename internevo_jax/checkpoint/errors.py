"""The one exception type the checkpoint package raises for problems the user can fix."""

from __future__ import annotations

import errno


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved or loaded; the message is one paragraph naming the path and the fix."""


class StorageUnreachable(CheckpointError):
    """The storage service (an S3 endpoint) could not be reached or answered with a server error.

    Raised for failures that may pass (endpoint down, timeouts, 5xx answers): a save retries them
    and, if they persist, reports the checkpoint as not saved while training goes on.
    """


def cause_chain(err: BaseException | None):
    """`err`, then what caused it, as a traceback shows them: the explicit cause, else the context
    unless it was suppressed (`raise ... from None`)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = (
            err.__cause__
            if err.__cause__ is not None
            else (None if err.__suppress_context__ else err.__context__)
        )


def is_disk_full(err: BaseException) -> bool:
    """True when `err` (or anything in its cause chain) says the disk is full.

    TensorStore reports ENOSPC as a ValueError whose text carries the OS message, not as an
    OSError, so the text is checked as well as errno.
    """
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or "No space left on device" in str(e)
        or "ENOSPC" in str(e)
        for e in cause_chain(err)
    )


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's text, shortened: enough to name the cause in a one-paragraph message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
