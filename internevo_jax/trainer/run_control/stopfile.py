"""The stop file: a file the user writes while training runs to ask for a checkpoint (and an exit).

It holds one integer, as in InternEvo: `-N` saves at step N and goes on, `N` (or `+N`) saves at
step N and exits. The file is stat()ed every step and read again only when it changed. Anything
else in it (text, binary bytes) is reported once per change of the file and ignored; a directory at
the path is reported once and ignored.
"""

from __future__ import annotations

import logging
import os
import stat

from internevo_jax.checkpoint.policy import Request

logger = logging.getLogger("internevo_jax")

SAVE = Request.SAVE
SAVE_AND_EXIT = Request.SAVE_AND_EXIT
_MAX_BYTES = 4096  # an integer is a few bytes; a larger file is not read whole


class StopFile:
    """Watches `path`; `action(step)` says what to do after `step` steps."""

    def __init__(self, path: str):
        self.path = path
        self._signature: tuple | None = None
        self._value: int | None = None
        self._warned_dir = False

    def value(self) -> int | None:
        """The integer in the file (None when absent, empty or not a number)."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._signature, self._value = None, None
            self._warned_dir = False
            return None
        if stat.S_ISDIR(st.st_mode):
            if not self._warned_dir:
                self._warned_dir = True
                logger.warning(
                    "stop file %s is a directory, so it is ignored; ckpt.stop_file_path must name a file "
                    "(echo -N > FILE saves at step N, echo N > FILE saves at step N and exits)",
                    self.path,
                )
            self._signature, self._value = None, None
            return None
        self._warned_dir = False
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature != self._signature:
            self._signature = signature
            self._value = self._read()
        return self._value

    def _read(self) -> int | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_BYTES + 1)
        except OSError:
            return None
        # Bytes that are not UTF-8 (a binary file written by mistake) are shown escaped, never fatal.
        text = raw[:_MAX_BYTES].decode("utf-8", errors="backslashreplace").strip()
        if not text:
            return None
        try:
            value = int(text) if len(raw) <= _MAX_BYTES else None
        except ValueError:
            value = None
        if value is None:
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
