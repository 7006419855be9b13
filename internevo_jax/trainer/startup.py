"""What to load before the first step, and applying it to the train state, the context and the loader.

auto_resume=True: the newest complete checkpoint in save_ckpt_folder, everything in it, or
nothing; ckpt.load_ckpt_info is then not used, as in InternEvo (whose example configs keep a
placeholder load path next to auto_resume). auto_resume=False: ckpt.load_ckpt_info, if set: with
ckpt_type "internevo" a checkpoint of this trainer or a folder of InternEvo's own .pt shards (parts
chosen by `content`), with ckpt_type "hf" Hugging Face weights.
"""

from __future__ import annotations

import dataclasses
import logging

from internevo_jax.checkpoint import (
    CheckpointError,
    CheckpointManager,
    Restored,
    normalize_content,
    parse_location,
)
from internevo_jax.checkpoint.content import restores_context, with_schedule_from
from internevo_jax.checkpoint.internevo_pt import is_internevo_folder, read_internevo
from internevo_jax.checkpoint.reading import resolve_load_path
from internevo_jax.checkpoint.storage import LocalLocation, Location
from internevo_jax.data import DataError
from internevo_jax.data.sampler import CHECKPOINT_FOLDER
from internevo_jax.hf import load_hf_into

logger = logging.getLogger("internevo_jax")


@dataclasses.dataclass(frozen=True)
class Source:
    """What to load at start: a checkpoint folder (`location`), Hugging Face weights (`hf_path`) or
    an InternEvo .pt folder (`internevo_path`)."""

    content: frozenset[str]
    location: Location | None = None
    hf_path: str | None = None
    internevo_path: str | None = None


def choose_source(cfg, manager: CheckpointManager) -> Source | None:
    """Auto-resume, ckpt.load_ckpt_info, or None (train from scratch); logs the choice."""
    ck = cfg.ckpt
    info = ck.load_ckpt_info
    source = None
    if ck.auto_resume:
        if info is not None and info.path:
            logger.info(
                "auto_resume=True: ckpt.load_ckpt_info (%s) is not used; set ckpt.auto_resume=False to load it",
                info.path,
            )
        info = None
        newest = manager.resume_point()
        if newest is not None:
            source = Source(normalize_content(("all",)), location=newest.location)
            logger.info(
                "auto_resume: resuming from the %s of step %d at %s",
                newest.kind,
                newest.step,
                newest.location,
            )
    if info is not None and info.path:
        content = normalize_content(info.content)
        if info.ckpt_type == "hf":  # load_hf_into reads (and checks) the path itself
            return Source(content, hf_path=info.path)
        if info.ckpt_type != "internevo":
            raise CheckpointError(
                f'ckpt.load_ckpt_info.ckpt_type={info.ckpt_type!r} is not supported; use "internevo" for '
                f'checkpoints saved by this trainer or "hf" for Hugging Face weights.'
            )
        location = parse_location(info.path, key="ckpt.load_ckpt_info.path")
        if isinstance(location, LocalLocation) and is_internevo_folder(location.path):
            logger.info(
                "loading %s from the InternEvo checkpoint %s", ", ".join(sorted(content)), location.path
            )
            return Source(content, internevo_path=location.path)
        source = Source(content, location=resolve_load_path(location, manager.s3_timeouts))
        logger.info("loading %s from %s", ", ".join(sorted(content)), source.location)
    return source


def load_at_start(cfg, manager: CheckpointManager, state, shardings, ctx, loader):
    """Load what the config asks for; returns the new state and updates `ctx` and `loader` in place."""
    source = choose_source(cfg, manager)
    if source is None:
        logger.info("no checkpoint to resume from: training from scratch")
        return state
    if source.hf_path is not None:
        return load_hf_into(state, shardings, source.hf_path, cfg, source.content)
    if source.internevo_path is not None:
        dp_size = loader.state().get("dp_size") if loader is not None else None
        restored = read_internevo(source.internevo_path, cfg, state, shardings, source.content, dp_size)
        return _apply_from(source.internevo_path, restored, state, ctx, loader)
    restored = manager.read(source.location, state, shardings, source.content)
    return _apply_from(str(source.location), restored, state, ctx, loader)


def _apply_from(folder: str, restored: Restored, state, ctx, loader):
    """apply_restored; a refused data position names `folder` in the command that loads without it."""
    try:
        return apply_restored(restored, state, ctx, loader)
    except DataError as err:
        if CHECKPOINT_FOLDER not in str(err):
            raise
        raise DataError(str(err).replace(CHECKPOINT_FOLDER, folder)) from None


def apply_restored(restored: Restored, state, ctx, loader):
    """Merge what was read into `state` (returned), `ctx` and `loader` as `restored.content` selects."""
    content = restored.content
    if restored.params is not None:
        state = state.replace(params=restored.params)
    if restored.opt_state is not None:
        if "optimizer" in content:
            opt_state = restored.opt_state
            if "scheduler" not in content:  # restart the lr/beta2 schedules, keep the moments
                opt_state = with_schedule_from(opt_state, state.opt_state)
            state = state.replace(opt_state=opt_state, loss_scale=restored.loss_scale)
        else:  # scheduler only: fresh moments, the schedules continue where they were
            state = state.replace(opt_state=with_schedule_from(state.opt_state, restored.opt_state))
    if restores_context(content) and restored.context is not None:
        for key, value in restored.context.items():
            if hasattr(ctx, key):
                setattr(ctx, key, int(value))
    if restored.sampler is not None and loader is not None:
        restore_loader(loader, restored.sampler)
    return state


def restore_loader(loader, saved: dict) -> None:
    """Restore the data position; a new data-parallel size alone is allowed (resuming on another mesh).

    The step counter then names batches of the new layout: the run continues at the same step, but
    its batches are not the ones the original layout would have read. Any other change of data
    settings is refused by the loader itself.
    """
    mine = loader.state()
    changed = {k for k, v in mine.items() if k != "step" and k in saved and saved[k] != v}
    if changed and changed <= {"dp_size"}:
        logger.warning(
            "the data-parallel size changed from %s to %s since the checkpoint: continuing at step %s "
            "with the batches of the new layout",
            saved["dp_size"],
            mine["dp_size"],
            saved["step"],
        )
        loader.restore(saved, strict=False)
    else:
        loader.restore(saved)
