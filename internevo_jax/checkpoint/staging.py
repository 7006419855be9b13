"""The local staging folder of S3 checkpoints: orbax writes there before the upload, restores read there.

Orbax cannot write to s3:// (its TensorStore specs only know local paths and GCS), so an S3
checkpoint is written locally first and uploaded by the background thread, as InternEvo's
async_upload does.
"""

from __future__ import annotations

import logging
import os
import shutil

from internevo_jax.checkpoint import distributed
from internevo_jax.checkpoint.deadlines import Deadline
from internevo_jax.checkpoint.errors import CheckpointError, first_line
from internevo_jax.checkpoint.failures import check_writable
from internevo_jax.checkpoint.storage import LocalLocation, Location, S3Location

logger = logging.getLogger("internevo_jax")

PROBE_NAME = ".shared_probe"


def staging_base(tmp_folder: str | None, run_dir: str) -> str:
    """ckpt.async_upload_tmp_folder, else <run_dir>/ckpt_staging."""
    return tmp_folder or os.path.join(run_dir, "ckpt_staging")


def staging_folder(root: Location, tmp_folder: str | None, run_dir: str) -> str:
    """Where orbax writes the checkpoints of `root`: the folder itself when local, a staging folder for S3."""
    if isinstance(root, LocalLocation):
        return root.path
    return os.path.join(
        staging_base(tmp_folder, run_dir), "internevo_jax", root.bucket, *root.prefix.split("/")
    )


def restore_folder(source: S3Location, tmp_folder: str | None, run_dir: str, *, shared: bool) -> str:
    """Where the parts of an S3 checkpoint are downloaded to: one folder for all processes when shared."""
    import jax

    return os.path.join(
        staging_base(tmp_folder, run_dir),
        "internevo_jax",
        "restore" if shared else f"restore-p{jax.process_index()}",
        source.bucket,
        *source.prefix.split("/"),
    )


def uploads_folder(stage_root: str) -> str:
    """Where the processes' flag files of S3 uploads lie (upload.flag), next to the staging folder."""
    return stage_root.rstrip("/") + ".uploads"


def hf_scratch_folder(stage_root: str) -> str:
    """Where the Hugging Face copy of an S3 checkpoint is written before its upload."""
    return stage_root.rstrip("/") + ".hf"


def remove_leftovers(stage_root: str) -> list[str]:
    """Delete what an earlier run left in the staging folder; the names removed.

    A run killed between a save and the deletion of its staged copy leaves the copy (a whole
    checkpoint), orbax's temporary folders and the upload's flag files behind, and nothing else
    ever removes them. At start-up nothing of this run is staged yet, and what a killed run staged
    is of no use: its upload either completed (the bucket holds it) or never will (resume takes the
    newest complete checkpoint in the bucket).
    """
    removed = []
    if os.path.isdir(stage_root):
        for name in sorted(os.listdir(stage_root)):
            if name != PROBE_NAME:
                path = os.path.join(stage_root, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
                removed.append(name)
    for path in (uploads_folder(stage_root), hf_scratch_folder(stage_root)):
        if os.path.isdir(path) and os.listdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(os.path.basename(path))
    return removed


def ensure_shared(stage_root: str, root: S3Location, deadline: Deadline) -> None:
    """Create the staging folder, clear what an earlier run left there, and check every host sees it
    (orbax writes one folder from all processes).

    The processes wait for each other at most `deadline` (ckpt.agreement_timeout_s).
    """
    try:
        os.makedirs(stage_root, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"Cannot create the staging folder {stage_root} for checkpoints bound for {root}: "
            f"{first_line(err)}. Set ckpt.async_upload_tmp_folder to a writable local folder."
        ) from err
    check_writable(
        stage_root,
        what="the staging folder",
        fix=f"Checkpoints bound for {root} are written there before the upload: set "
        f"ckpt.async_upload_tmp_folder to a writable local folder with room for one checkpoint, then "
        f"start again.",
    )
    if distributed.is_primary():
        # before the processes meet below: none of them stages anything until then
        removed = remove_leftovers(stage_root)
        if removed:
            logger.warning(
                "removed what an earlier run left in the staging folder %s: %s (staged copies of "
                "checkpoints of a run that stopped before deleting them)",
                stage_root,
                ", ".join(removed),
            )
    import jax

    if jax.process_count() == 1:
        return
    token = int.from_bytes(os.urandom(3), "little")  # fits int32: JAX collectives run without x64
    probe = os.path.join(stage_root, PROBE_NAME)
    if distributed.is_primary():
        with open(probe, "w") as f:
            f.write(str(token))
    token = distributed.from_primary([token], deadline, what="process 0's staging-folder probe")[0]
    distributed.barrier("staging_probe", deadline)
    try:
        with open(probe) as f:
            ok = int(f.read().strip()) == token
    except (OSError, ValueError):
        ok = False
    if distributed.agree_max(
        [0 if ok else 1], deadline, what="the other processes to check the staging folder"
    )[0]:
        raise CheckpointError(
            f"Saving to {root} from {jax.process_count()} processes needs a staging folder "
            f"that every host sees, but {stage_root} is not shared between hosts. Set "
            f"ckpt.async_upload_tmp_folder to a folder on a shared file system."
        )
