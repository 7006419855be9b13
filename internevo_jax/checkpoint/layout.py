"""Names on disk and the rule that decides which checkpoints are complete.

    <folder>/<step>/                  a regular checkpoint (orbax step folder)
        model/ optimizer/             the TrainState, sharded (orbax StandardSave, OCDBT)
        context/ sampler/ config/     JSON items
        COMMITTED                     the commit marker, written last
    <folder>/snapshot/0/<step>/       snapshot slot 0 (same contents; ckpt.snapshot_ckpt_folder
    <folder>/snapshot/1/<step>/       snapshot slot 1  moves both slots elsewhere)
    <folder>/<step>_hf/               the Hugging Face copy of a regular checkpoint
                                      (ckpt.enable_internevo2hf_ckpt; InternEvo's name)

A checkpoint is complete exactly when its COMMITTED marker exists. Anything else that looks like a
step folder (no marker, or orbax's `<step>.orbax-checkpoint-tmp-*`) is a half-written save.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time

from internevo_jax.checkpoint.storage import Location

MARKER = "COMMITTED"
SNAPSHOT_DIR = "snapshot"
SNAPSHOT_SLOTS = (f"{SNAPSHOT_DIR}/0", f"{SNAPSHOT_DIR}/1")
REGULAR = ""  # the slot name of regular checkpoints: the folder itself
STATE_ITEMS = ("model", "optimizer")
JSON_ITEMS = ("context", "sampler", "config")
ITEMS = STATE_ITEMS + JSON_ITEMS

HF_SUFFIX = "_hf"

_STEP = re.compile(r"^(\d+)$")
_PARTIAL = re.compile(r"^(\d+)\.orbax-checkpoint-tmp.*$")


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """One complete checkpoint: its step, its slot ("" or "snapshot/0|1") and its folder."""

    step: int
    slot: str
    location: Location

    @property
    def kind(self) -> str:
        return "snapshot " + self.slot.rsplit("/", 1)[-1] if self.slot else "checkpoint"


@dataclasses.dataclass
class Scan:
    """What a checkpoint folder holds: complete checkpoints (oldest first) and half-written leftovers."""

    complete: list[CheckpointRef]
    incomplete: list[Location]

    def newest(self) -> CheckpointRef | None:
        """The complete checkpoint with the highest step; a regular one wins a tie with a snapshot."""
        if not self.complete:
            return None
        return max(self.complete, key=lambda r: (r.step, r.slot == REGULAR))

    def in_slot(self, slot: str) -> list[CheckpointRef]:
        return sorted((r for r in self.complete if r.slot == slot), key=lambda r: r.step)


def slot_location(root: Location, slot: str, snapshot_root: Location | None = None) -> Location:
    """The folder of `slot`: the root itself, or <snapshot_root or root/snapshot>/<0|1>."""
    if not slot:
        return root
    if snapshot_root is not None:
        return snapshot_root.join(slot.rsplit("/", 1)[-1])
    return root.join(*slot.split("/"))


def scan_folder(files, base: Location, slot: str) -> Scan:
    """Complete and half-written checkpoints directly under `base`, the folder of `slot`."""
    complete, incomplete = [], []
    for name in files.list_children(base):
        step_match, partial = _STEP.match(name), _PARTIAL.match(name)
        if step_match:
            loc = base.join(name)
            if files.exists(loc.join(MARKER)):
                complete.append(CheckpointRef(int(name), slot, loc))
            else:
                incomplete.append(loc)
        elif partial:
            incomplete.append(base.join(name))
    complete.sort(key=lambda r: r.step)
    return Scan(complete, incomplete)


def scan_slot(files, root: Location, slot: str, snapshot_root: Location | None = None) -> Scan:
    """Complete and half-written checkpoints of one slot."""
    return scan_folder(files, slot_location(root, slot, snapshot_root), slot)


def scan(files, root: Location, snapshot_root: Location | None = None) -> Scan:
    """Scan the regular folder and both snapshot slots (under root/snapshot unless `snapshot_root`)."""
    result = Scan([], [])
    for slot in (REGULAR, *SNAPSHOT_SLOTS):
        part = scan_slot(files, root, slot, snapshot_root)
        result.complete += part.complete
        result.incomplete += part.incomplete
    result.complete.sort(key=lambda r: (r.step, r.slot))
    return result


def hf_copy_name(step: int) -> str:
    """The folder name, beside the step folders, of the Hugging Face copy of step `step`."""
    return f"{step}{HF_SUFFIX}"


def marker_text(step: int, slot: str, items: tuple[str, ...]) -> str:
    return json.dumps({"step": step, "slot": slot, "items": list(items), "time": time.time()})


def looks_like_checkpoint(files, loc: Location) -> bool:
    """True when `loc` is itself one checkpoint folder (it holds a model item)."""
    return files.exists(loc.join(MARKER)) or "model" in files.list_children(loc)
