"""The stop file: a file the user writes while training runs to ask for a checkpoint (and an exit).

It holds one integer, as in InternEvo: `-N` saves at step N and goes on, `N` (or `+N`) saves at
step N and exits. The file is stat()ed every step and read again only when it changed.
"""

from __future__ import annotations

import logging
import os

from internevo_jax.checkpoint.policy import Request

logger = logging.getLogger("internevo_jax")

SAVE = Request.SAVE
SAVE_AND_EXIT = Request.SAVE_AND_EXIT


class StopFile:
    """Watches `path`; `action(step)` says what to do after `step` steps."""

    def __init__(self, path: str):
        self.path = path
        self._signature: tuple | None = None
        self._value: int | None = None

    def value(self) -> int | None:
        """The integer in the file (None when absent, empty or not a number)."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._signature, self._value = None, None
            return None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature != self._signature:
            self._signature = signature
            self._value = self._read()
        return self._value

    def _read(self) -> int | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            value = int(text)
        except ValueError:
            logger.warning(
                "stop file %s holds %r, not an integer; write -N to save at step N, or N to save "
                "at step N and exit",
                self.path,
                text[:40],
            )
            return None
        if value:
            what = "save a checkpoint" if value < 0 else "save a checkpoint and exit"
            logger.info("stop file %s: will %s at step %d", self.path, what, abs(value))
        return value

    def action(self, step: int) -> Request:
        """SAVE, SAVE_AND_EXIT or Request.NONE (0) for the state after `step` steps."""
        value = self.value()
        if not value or abs(value) != step:
            return Request.NONE
        return SAVE if value < 0 else SAVE_AND_EXIT
