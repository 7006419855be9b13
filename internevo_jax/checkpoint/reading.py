"""Finding the checkpoint to read and reading it: local folders directly, S3 through a local download.

Reading returns what was read (`Restored`); merging it into a train state, a context and a loader
is the caller's business.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any

from internevo_jax.checkpoint import distributed
from internevo_jax.checkpoint.deadlines import Deadline
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.files import files_for
from internevo_jax.checkpoint.layout import (
    MARKER,
    REGULAR,
    SNAPSHOT_SLOTS,
    CheckpointRef,
    Scan,
    looks_like_checkpoint,
    scan,
    slot_location,
)
from internevo_jax.checkpoint.restore import read_checkpoint
from internevo_jax.checkpoint.staging import restore_folder
from internevo_jax.checkpoint.storage import LocalLocation, Location, S3Location, S3Timeouts

logger = logging.getLogger("internevo_jax")


@dataclasses.dataclass(frozen=True)
class Restored:
    """The parts of one checkpoint that `content` selected; None where not read.

    params: the model item. opt_state and loss_scale: the optimizer item (read for "optimizer" and
    for "scheduler"). context: the saved TrainContext fields. sampler: the loader's saved state.
    """

    content: frozenset[str]
    params: Any = None
    opt_state: Any = None
    loss_scale: Any = None
    context: dict | None = None
    sampler: dict | None = None

    @classmethod
    def from_items(cls, items: dict, content: frozenset[str]) -> Restored:
        optimizer = items.get("optimizer") or {}
        return cls(
            content=content,
            params=items.get("model"),
            opt_state=optimizer.get("opt_state"),
            loss_scale=optimizer.get("loss_scale"),
            context=items.get("context"),
            sampler=items.get("sampler"),
        )


def agreed_newest(
    found: Scan, root: Location, snapshot_root: Location | None, deadline: Deadline
) -> CheckpointRef | None:
    """Process 0's newest complete checkpoint, on every process (they must all restore the same one)."""
    newest = found.newest()
    slots = (REGULAR, *SNAPSHOT_SLOTS)
    step, slot_index = distributed.from_primary(
        [newest.step if newest else -1, slots.index(newest.slot) if newest else 0],
        deadline,
        what="process 0's choice of the checkpoint to resume from",
    )
    if step < 0:
        return None
    slot = slots[slot_index]
    return CheckpointRef(step, slot, slot_location(root, slot, snapshot_root).join(step))


def resolve_load_path(location: Location, timeouts: S3Timeouts | None = None) -> Location:
    """The checkpoint folder ckpt.load_ckpt_info.path names: itself, or the newest complete one inside."""
    files = files_for(location, timeouts)
    if isinstance(location, S3Location):
        files.check_bucket(location)
    if looks_like_checkpoint(files, location):
        if not files.exists(location.join(MARKER)):
            raise CheckpointError(
                f"The checkpoint at {location} is incomplete: it has no {MARKER} marker, so its save was "
                f"interrupted. Load an older checkpoint from the same folder instead."
            )
        return location
    found = scan(files, location)
    newest = found.newest()
    if newest is not None:
        return newest.location
    if isinstance(location, LocalLocation) and not os.path.exists(location.path):
        raise CheckpointError(
            f"ckpt.load_ckpt_info.path: {location.path} does not exist. Point it at a checkpoint folder "
            f"(e.g. <save_ckpt_folder>/<step>) or at a save folder holding complete checkpoints."
        )
    half = (
        f" (only half-written ones: {', '.join(str(x) for x in found.incomplete[:3])})"
        if found.incomplete
        else ""
    )
    raise CheckpointError(
        f"ckpt.load_ckpt_info.path: no complete checkpoint in {location}{half}. Point it at a checkpoint "
        f"folder (e.g. <save_ckpt_folder>/<step>) or at a save folder holding complete checkpoints."
    )


def read(
    source: Location,
    state,
    shardings,
    content: frozenset[str],
    *,
    tmp_folder: str | None,
    run_dir: str,
    shared_staging: bool,
    current_cfg: dict | None,
    timeouts: S3Timeouts | None = None,
    deadline: Deadline,
) -> Restored:
    """Read the parts `content` selects from the checkpoint at `source`, placed in `shardings`.

    `timeouts` bound the S3 requests; the processes wait for each other's download at most `deadline`.
    """

    def read_from(folder: str) -> Restored:
        items = read_checkpoint(
            folder,
            state=state,
            shardings=shardings,
            content=content,
            shown=str(source),
            current_cfg=current_cfg,
        )
        return Restored.from_items(items, content)

    if isinstance(source, LocalLocation):
        return read_from(source.path)
    # S3: fetch the needed parts into the staging folder, restore from there, then drop the copy.
    # One download serves all processes when they share the folder; otherwise each fetches its own.
    import jax

    shared = shared_staging or jax.process_count() == 1
    local = restore_folder(source, tmp_folder, run_dir, shared=shared)
    downloader = distributed.is_primary() if shared else True
    needed = {"model"} if "model" in content else set()
    needed |= {"optimizer"} if content & {"optimizer", "scheduler"} else set()
    needed |= {"context", "sampler", "config"}
    if downloader:
        shutil.rmtree(local, ignore_errors=True)
        store = files_for(source, timeouts)
        count = store.download_tree(source, local, select=lambda rel: rel.split("/", 1)[0] in needed)
        logger.info("downloaded %d files of %s to %s", count, source, local)
    distributed.barrier(f"downloaded_{source.prefix}", deadline)
    try:
        return read_from(local)
    finally:
        distributed.barrier(f"restored_{source.prefix}", deadline)
        if downloader:
            shutil.rmtree(local, ignore_errors=True)
