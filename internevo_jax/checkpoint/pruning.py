"""Deleting old checkpoints once a newer one is complete, and what the snapshot slots hold."""

from __future__ import annotations

import logging

from internevo_jax.checkpoint import distributed
from internevo_jax.checkpoint.deadlines import Deadline
from internevo_jax.checkpoint.layout import REGULAR, SNAPSHOT_SLOTS, hf_copy_name, scan_folder, scan_slot
from internevo_jax.checkpoint.storage import Location

logger = logging.getLogger("internevo_jax")


def prune(files, folder: Location, slot: str, keep: int, mngr, deadline: Deadline) -> None:
    """Keep the newest `keep` complete checkpoints of `slot` (in `folder`); `mngr` is its orbax manager.

    A regular checkpoint's Hugging Face copy (<step>_hf) goes with it. The other processes wait for
    process 0's deletions at most `deadline`.
    """
    refs = scan_folder(files, folder, slot).complete
    old = refs[:-keep] if len(refs) > keep else []
    if not old:
        return
    if distributed.is_primary():
        for ref in old:
            files.delete_tree(ref.location)
            logger.info("deleted old %s of step %d (%s)", ref.kind, ref.step, ref.location)
            copy = folder.join(hf_copy_name(ref.step))
            if slot == REGULAR and files.delete_tree(copy):
                logger.info("deleted the Hugging Face copy of step %d (%s)", ref.step, copy)
    distributed.barrier(f"pruned_{slot}_{old[-1].step}", deadline)
    mngr.reload()


def snapshot_steps(files, root: Location, snapshot_root: Location | None) -> dict[str, int]:
    """The newest complete step of each snapshot slot (-1 for an empty slot)."""
    steps = {}
    for slot in SNAPSHOT_SLOTS:
        refs = scan_slot(files, root, slot, snapshot_root).complete
        steps[slot] = refs[-1].step if refs else -1
    return steps
