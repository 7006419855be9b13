"""The one check that an output folder can be written, for the tools that write files.

`check_writable(folder, fix=..., error=...)` raises `error("cannot write to FOLDER: REASON. FIX")`
when no file can be created in `folder`: a read-only file system, no permission, or a path that
runs through a regular file ("somefile/out"). It runs before any slow work, so a tool stops at
once with one paragraph instead of an OSError traceback at the end.

Without `create` nothing is left behind: a folder that does not exist yet is judged by the
nearest existing folder above it, where a probe file is created and removed. With `create` the
folder (and its parents) is made first and probed itself.

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile

# The exit status of a tool that stops with an `error: ...` paragraph (argparse uses it too).
ERROR_EXIT = 2


class OutputError(RuntimeError):
    """An output folder that cannot be written; the message names it and the fix."""


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def unwritable_reason(folder: str | os.PathLike, *, create: bool = False) -> str | None:
    """Why no file can be created in `folder`, or None when one can (see the module docstring)."""
    folder = os.fspath(folder) or "."
    if create:
        try:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            return "it is a file, not a folder"
        except OSError as e:
            existing = _nearest_existing(folder)
            if os.path.exists(existing) and not os.path.isdir(existing):
                return f"{existing} is a file, not a folder"
            return e.strerror or str(e)
        probe_dir = folder
    else:
        probe_dir = _nearest_existing(folder)
        if os.path.exists(probe_dir) and not os.path.isdir(probe_dir):
            same = os.path.abspath(folder) == probe_dir
            return "it is a file, not a folder" if same else f"{probe_dir} is a file, not a folder"
    probe = None
    try:
        # a byte written and synced: creating an empty file still succeeds on a full disk
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=probe_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(b"write probe\n")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        if probe is not None:
            with contextlib.suppress(OSError):
                os.remove(probe)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"its disk is full ({e.strerror})"
        return e.strerror or str(e)
    return None


def check_writable(
    folder: str | os.PathLike,
    *,
    fix: str,
    error: type[Exception] = OutputError,
    create: bool = False,
) -> None:
    """Raise `error("cannot write to FOLDER: REASON. FIX")` unless a file can be created in `folder`."""
    reason = unwritable_reason(folder, create=create)
    if reason is not None:
        raise error(f"cannot write to {os.fspath(folder)}: {reason}. {fix}")
