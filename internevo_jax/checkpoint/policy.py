"""When a step is saved, and into which slot: a pure function of the step, the settings and a request.

Regular checkpoints fall every `checkpoint_every` steps and at `total_steps`; a save or a
save-and-exit requested from outside (stop file, signal) is a regular one too. Snapshots fall every
`oss_snapshot_freq` steps when no regular save does, into the slot holding the older snapshot, so
the newest snapshot survives an interrupted save.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from internevo_jax.checkpoint.layout import REGULAR, SNAPSHOT_SLOTS

SNAPSHOT = "snapshot"  # "a snapshot is due"; which of SNAPSHOT_SLOTS gets it depends on what they hold


class Request(enum.IntEnum):
    """What run control asks for after a step; ordered so that the largest request of all processes wins."""

    NONE = 0
    SAVE = 1
    SAVE_AND_EXIT = 2


@dataclasses.dataclass(frozen=True)
class SaveSettings:
    """The settings the policy reads (None = never by that rule)."""

    every: int | None = None
    snapshot_every: int | None = None
    total_steps: int = 0
    enabled: bool = True

    @classmethod
    def from_config(cls, cfg) -> SaveSettings:
        ck = cfg.ckpt
        return cls(
            every=positive_or_none(ck.checkpoint_every),
            snapshot_every=positive_or_none(ck.oss_snapshot_freq),
            total_steps=int(cfg.data.total_steps),
            enabled=bool(ck.enable_save_ckpt and ck.save_ckpt_folder),
        )


def positive_or_none(value) -> int | None:
    """None and non-positive values mean "never by this rule" (the loader turns inf into None)."""
    return int(value) if value and value > 0 else None


def due(step: int, settings: SaveSettings, request: Request = Request.NONE) -> str | None:
    """REGULAR, SNAPSHOT or None (no save) for the state after `step` steps."""
    if not settings.enabled:
        return None
    if (
        request != Request.NONE
        or (settings.every and step % settings.every == 0)
        or step == settings.total_steps
    ):
        return REGULAR
    if settings.snapshot_every and step % settings.snapshot_every == 0:
        return SNAPSHOT
    return None


def snapshot_slot(slot_steps: Mapping[str, int]) -> str:
    """The snapshot slot to overwrite: the one holding the older snapshot (-1 or absent = empty)."""
    return min(SNAPSHOT_SLOTS, key=lambda s: (slot_steps.get(s, -1), s))


def save_slot(
    step: int,
    settings: SaveSettings,
    request: Request = Request.NONE,
    slot_steps: Mapping[str, int] | None = None,
) -> str | None:
    """The slot step `step` is saved into (REGULAR, "snapshot/0" or "snapshot/1"), or None."""
    kind = due(step, settings, request)
    if kind == SNAPSHOT:
        return snapshot_slot(slot_steps or {})
    return kind
