"""Uploading a staged checkpoint to S3: retried, bounded in time, and never fatal to training when the
endpoint is unreachable.

Each process uploads the files it wrote itself; the processes agree through flag files in the
shared staging folder, so a failure on any of them leaves the checkpoint unmarked on all. The whole
upload has a deadline (`ckpt.upload_timeout_s`); past it the checkpoint is reported as not saved.
"""

from __future__ import annotations

import contextlib
import logging
import os

from internevo_jax.checkpoint import deadlines, distributed
from internevo_jax.checkpoint.deadlines import Countdown, Deadlines
from internevo_jax.checkpoint.errors import StorageUnreachable
from internevo_jax.checkpoint.layout import ITEMS, MARKER, marker_text
from internevo_jax.checkpoint.staging import uploads_folder
from internevo_jax.checkpoint.storage import S3Location

logger = logging.getLogger("internevo_jax")


def retrying(what: str, fn, step: int, attempts: int, until: Countdown | None = None):
    """deadlines.retrying for an operation of the save of `step`."""
    return deadlines.retrying(f"{what} for the checkpoint of step {step}", fn, attempts, until)


def file_owner(rel: str) -> int:
    """Which process uploads a staged file: the one whose shard it is, process 0 for shared files.

    Orbax puts each process's array data under `ocdbt.process_<i>/` and its array metadata under
    `array_metadatas/process_<i>`; everything else is written once by process 0.
    """
    for part in rel.split("/"):
        for prefix in ("ocdbt.process_", "process_"):
            if part.startswith(prefix) and part[len(prefix) :].isdigit():
                return int(part[len(prefix) :])
    return 0


def flag(stage_root: str, slot: str, step: int, name: str) -> str:
    """A flag file in the (shared) staging area through which the processes agree on an upload."""
    folder = uploads_folder(stage_root)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{slot.replace('/', '-') or 'regular'}-{step}.{name}")


def clear_flags(stage_root: str, slot: str, step: int) -> None:
    """Remove the flags of one upload (process 0, once every process has read them)."""
    import jax

    for name in ("cleared", "committed", *(f"p{i}" for i in range(jax.process_count()))):
        with contextlib.suppress(OSError):
            os.remove(flag(stage_root, slot, step, name))


def upload(
    files, stage_root: str, slot: str, step: int, staged: str, dest: S3Location, deadlines: Deadlines
) -> bool:
    """Clear the destination, upload every process's files, write the marker; False = not saved.

    An unreachable endpoint is retried (ckpt.s3_attempts per operation); if it stays unreachable,
    or the upload runs past ckpt.upload_timeout_s, the checkpoint is reported as not saved (no
    marker) and training goes on: the next scheduled save tries again. The processes meet between
    the phases at most ckpt.save_timeout_s.
    """
    import jax

    me, count = jax.process_index(), jax.process_count()
    until = deadlines.upload.start()
    attempts = files.attempts
    failure = None
    if distributed.is_primary():
        try:
            stale = retrying(
                "checking the destination", lambda: files.list_files(dest), step, attempts, until
            )
            if stale:
                logger.warning("a half-written or older checkpoint exists at %s: replacing it", dest)
                retrying("clearing the destination", lambda: files.delete_tree(dest), step, attempts, until)
            open(flag(stage_root, slot, step, "cleared"), "w").close()
        except StorageUnreachable as err:
            failure = err
    distributed.barrier(f"cleared_{slot}_{step}", deadlines.save)
    if os.path.exists(flag(stage_root, slot, step, "cleared")):
        try:
            uploaded = retrying(
                "uploading",
                lambda: files.upload_tree(
                    staged, dest, select=lambda rel: file_owner(rel) == me, until=until
                ),
                step,
                attempts,
                until,
            )
            logger.debug("process %d uploaded %d files of step %d", me, uploaded, step)
            open(flag(stage_root, slot, step, f"p{me}"), "w").close()
        except StorageUnreachable as err:
            failure = err
    distributed.barrier(f"uploaded_{slot}_{step}", deadlines.save)
    if distributed.is_primary() and all(
        os.path.exists(flag(stage_root, slot, step, f"p{i}")) for i in range(count)
    ):
        try:
            retrying(
                "writing the commit marker",
                lambda: files.write_text(dest.join(MARKER), marker_text(step, slot, ITEMS)),
                step,
                attempts,
                until,
            )
            open(flag(stage_root, slot, step, "committed"), "w").close()
        except StorageUnreachable as err:
            failure = err
    distributed.barrier(f"committed_{slot}_{step}", deadlines.save)
    committed = os.path.exists(flag(stage_root, slot, step, "committed"))
    if not committed and (failure is not None or distributed.is_primary()):
        logger.error(
            "the checkpoint of step %d was NOT saved to %s: %s It has no %s marker and will never "
            "be resumed from; the newest complete checkpoint is unchanged. Training goes on and "
            "the next scheduled save tries again.",
            step,
            dest,
            failure if failure is not None else "another process could not upload its part.",
            MARKER,
        )
    return committed
