"""The local staging folder of S3 checkpoints: orbax writes there before the upload, restores read there.

Orbax cannot write to s3:// (its TensorStore specs only know local paths and GCS), so an S3
checkpoint is written locally first and uploaded by the background thread, as InternEvo's
async_upload does.
"""

from __future__ import annotations

import os

from internevo_jax.checkpoint import distributed
from internevo_jax.checkpoint.errors import CheckpointError, first_line
from internevo_jax.checkpoint.storage import LocalLocation, Location, S3Location


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


def ensure_shared(stage_root: str, root: S3Location) -> None:
    """Create the staging folder and check every host sees it (orbax writes one folder from all processes)."""
    try:
        os.makedirs(stage_root, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"Cannot create the staging folder {stage_root} for checkpoints bound for {root}: "
            f"{first_line(err)}. Set ckpt.async_upload_tmp_folder to a writable local folder."
        ) from err
    import jax

    if jax.process_count() == 1:
        return
    token = int.from_bytes(os.urandom(3), "little")  # fits int32: JAX collectives run without x64
    probe = os.path.join(stage_root, ".shared_probe")
    if distributed.is_primary():
        with open(probe, "w") as f:
            f.write(str(token))
    token = distributed.from_primary([token])[0]
    distributed.barrier("staging_probe")
    try:
        with open(probe) as f:
            ok = int(f.read().strip()) == token
    except (OSError, ValueError):
        ok = False
    if distributed.agree_max([0 if ok else 1])[0]:
        raise CheckpointError(
            f"Saving to {root} from {jax.process_count()} processes needs a staging folder "
            f"that every host sees, but {stage_root} is not shared between hosts. Set "
            f"ckpt.async_upload_tmp_folder to a folder on a shared file system."
        )
