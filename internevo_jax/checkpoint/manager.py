"""The run's checkpoint saving and reading: orbax saves handed to a background thread, S3 staging, pruning.

Saving goes through orbax CheckpointManagers (one per slot: regular checkpoints, snapshot/0,
snapshot/1). A save returns once the arrays are copied off the devices; a background thread then
waits for orbax to finish writing, uploads to S3 when the folder is `boto3:`, writes the COMMITTED
marker last, writes the Hugging Face copy of a regular checkpoint when asked (`hf_copy.py`) and
prunes old checkpoints. Only one save is in flight: the next one (and the end of
training) waits for it. When to save is `policy.py`'s answer; what to do with a read checkpoint is
the caller's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time

import orbax.checkpoint as ocp

from internevo_jax.checkpoint import distributed, failures, pruning, reading, staging, upload
from internevo_jax.checkpoint.content import optimizer_tree
from internevo_jax.checkpoint.deadlines import DeadlineExceeded, Deadlines, logged_wait
from internevo_jax.checkpoint.errors import CheckpointError, first_line, is_disk_full
from internevo_jax.checkpoint.files import files_for
from internevo_jax.checkpoint.hf_copy import HFCopy
from internevo_jax.checkpoint.layout import (
    ITEMS,
    MARKER,
    REGULAR,
    CheckpointRef,
    Scan,
    hf_copy_name,
    marker_text,
    scan,
    slot_location,
)
from internevo_jax.checkpoint.policy import (
    SNAPSHOT,
    Request,
    SaveSettings,
    due,
    positive_or_none,
    snapshot_slot,
)
from internevo_jax.checkpoint.reading import Restored
from internevo_jax.checkpoint.storage import (
    LocalLocation,
    Location,
    S3Location,
    S3Timeouts,
    parse_location,
)

logger = logging.getLogger("internevo_jax")


class CheckpointManager:
    """Saves and reads a run's TrainState, counters and data position; see the module docstring."""

    def __init__(self, cfg, run_dir: str):
        ck = cfg.ckpt
        self.cfg = cfg
        self.run_dir = run_dir
        self.settings = SaveSettings.from_config(cfg)
        self.keep_last_n = positive_or_none(ck.keep_last_n)
        self.background_upload = bool(ck.async_upload)
        self.root: Location | None = (
            parse_location(ck.save_ckpt_folder, key="ckpt.save_ckpt_folder") if ck.save_ckpt_folder else None
        )
        # how long S3 requests, saves, uploads and the processes' meetings may take (docs/checkpoint.md)
        self.s3_timeouts = S3Timeouts.from_config(ck)
        self.deadlines = Deadlines.from_config(ck)
        self.files = files_for(self.root, self.s3_timeouts) if self.root is not None else None
        self.snapshot_root = self._snapshot_folder(ck.snapshot_ckpt_folder)
        self._config_json = json.loads(json.dumps(cfg.to_dict(), default=str))
        self._orbax: dict[str, ocp.CheckpointManager] = {}
        self._job: threading.Thread | None = None
        self._job_error: BaseException | None = None
        # the in-flight save's step, and its ckpt.save_timeout_s counting from its start
        self._job_step, self._job_clock = -1, self.deadlines.save.start()
        self._job_phase = ""  # what the background save is doing, for a save that runs out of time
        self._stuck = False  # a background save ran past ckpt.save_timeout_s and may still be running
        self._saved_steps: set[int] = set()
        self._failed_steps: set[int] = set()  # saves reported as not saved (storage unreachable)
        self._slot_steps: dict[str, int] | None = None  # newest complete step per snapshot slot
        self._stage_root = (
            staging.staging_folder(self.root, ck.async_upload_tmp_folder, run_dir)
            if self.root is not None
            else None
        )
        self._staging_shared = False  # set once the hosts are known to share the staging folder
        self._quiet = failures.QuietOrbax()  # orbax's own tracebacks of a failed write are not shown
        # checked before the destination: a model without an HF class is refused at start
        self.hf_copy = HFCopy.from_config(cfg) if self.save_enabled else None
        if self.save_enabled:
            self._check_destination()

    # -- set-up -------------------------------------------------------------------------------
    def _snapshot_folder(self, text: str | None) -> Location | None:
        """InternEvo's snapshot_ckpt_folder (default <save_ckpt_folder>/snapshot), on the same backend."""
        if self.root is None or not text:
            return None
        location = parse_location(text, key="ckpt.snapshot_ckpt_folder")
        if type(location) is not type(self.root) or (
            isinstance(location, S3Location) and location.settings.endpoint != self.root.settings.endpoint
        ):
            raise CheckpointError(
                f"ckpt.snapshot_ckpt_folder ({location}) must be on the same storage as ckpt.save_ckpt_folder "
                f"({self.root}); put both on the same file system or S3 endpoint, or drop snapshot_ckpt_folder "
                f"to use <save_ckpt_folder>/snapshot."
            )
        return location

    def _slot_loc(self, slot: str) -> Location:
        return slot_location(self.root, slot, self.snapshot_root)

    def _orbax_dir(self, slot: str) -> str:
        """The local folder orbax writes the slot's checkpoints to: the slot itself, or its staging folder."""
        if isinstance(self.root, LocalLocation):
            return self._slot_loc(slot).path
        return os.path.join(self._stage_root, *slot.split("/")) if slot else self._stage_root

    def _check_destination(self) -> None:
        if isinstance(self.root, S3Location):
            self.files.check_bucket(self.root)
            staging.ensure_shared(self._stage_root, self.root, self.deadlines.agreement)
            self._staging_shared = True
            logger.info(
                "checkpoints go to %s (endpoint %s), staged in %s",
                self.root.url,
                self.root.settings.endpoint_name,
                self._stage_root,
            )
        else:
            folders = [(self.root.path, "the checkpoint folder", "ckpt.save_ckpt_folder")]
            if self.settings.snapshot_every and isinstance(self.snapshot_root, LocalLocation):
                folders.append((self.snapshot_root.path, "the snapshot folder", "ckpt.snapshot_ckpt_folder"))
            for path, what, key in folders:
                try:
                    os.makedirs(path, exist_ok=True)
                except OSError as err:
                    raise CheckpointError(
                        f"Cannot create {what} {path}: {first_line(err)}. Set {key} to a writable folder."
                    ) from err
                failures.check_writable(
                    path,
                    what=what,
                    fix=f"Set {key} to a writable folder with room for the checkpoints, or make this one "
                    f"writable (e.g. mount it read-write), then start again.",
                )

    def _orbax_for(self, slot: str) -> ocp.CheckpointManager:
        if slot not in self._orbax:
            options = ocp.CheckpointManagerOptions(
                create=True,
                enable_async_checkpointing=True,
                async_options=ocp.AsyncOptions(timeout_secs=max(1, int(self.deadlines.save.seconds))),
            )
            self._orbax[slot] = ocp.CheckpointManager(self._orbax_dir(slot), options=options)
        return self._orbax[slot]

    # -- listing --------------------------------------------------------------------------------
    def scan(self) -> Scan:
        """Complete and half-written checkpoints in the save folder."""
        if self.root is None:
            return Scan([], [])
        return scan(self.files, self.root, self.snapshot_root)

    def latest(self) -> CheckpointRef | None:
        """The newest complete checkpoint in the save folder."""
        return self.scan().newest()

    @property
    def save_enabled(self) -> bool:
        """ckpt.enable_save_ckpt and a ckpt.save_ckpt_folder (the policy's `enabled`)."""
        return self.settings.enabled

    def failed(self, step: int) -> bool:
        """True when the save of `step` was reported as not saved (its storage was unreachable)."""
        return step in self._failed_steps

    # -- saving ---------------------------------------------------------------------------------
    def save_due(self, step: int, request: Request = Request.NONE) -> bool:
        """Whether `maybe_save` would save the state after `step` steps."""
        return step not in self._saved_steps and due(step, self.settings, request) is not None

    def maybe_save(self, state, ctx, loader, *, request: Request = Request.NONE, reason: str = "schedule"):
        """Save `ctx.step` if the save policy says so (given run control's `request`); returns the slot or None."""
        self.check_background()
        step = ctx.step
        if step in self._saved_steps:
            return None
        slot = due(step, self.settings, request)
        if slot == SNAPSHOT:
            slot = snapshot_slot(self._snapshot_steps())
        if slot is not None:
            self.save(state, ctx, loader, slot=slot, reason=reason)
        return slot

    def _snapshot_steps(self) -> dict[str, int]:
        if self._slot_steps is None:  # listed once; kept up to date by save()
            self._slot_steps = pruning.snapshot_steps(self.files, self.root, self.snapshot_root)
        return self._slot_steps

    def save(self, state, ctx, loader, *, slot: str = REGULAR, reason: str = "request") -> None:
        """Start saving the checkpoint of `ctx.step` into `slot`; returns once the arrays are copied."""
        if not self.save_enabled:
            raise CheckpointError(
                "Checkpoint saving is disabled (ckpt.enable_save_ckpt=False or no "
                "ckpt.save_ckpt_folder); enable it to save."
            )
        self.wait()
        step = int(ctx.step)
        mngr = self._orbax_for(slot)
        self._clear_step(slot, step, mngr)
        sampler = {**(loader.state() if loader is not None else {}), "step": step}
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(state.params),
            optimizer=ocp.args.StandardSave(optimizer_tree(state)),
            context=ocp.args.JsonSave(ctx.to_dict()),
            sampler=ocp.args.JsonSave(sampler),
            config=ocp.args.JsonSave(self._config_json),
        )
        started = time.perf_counter()
        self._quiet.install()
        try:
            mngr.save(step, args=args, force=True)
        except Exception as err:
            raise self._save_failed(err, slot, step) from err
        self._saved_steps.add(step)
        if slot and self._slot_steps is not None:
            self._slot_steps[slot] = step
        logger.info(
            "saving %s of step %d to %s (%s; %.2fs blocking)",
            "checkpoint" if not slot else slot,
            step,
            self._slot_loc(slot).join(step),
            reason,
            time.perf_counter() - started,
        )
        self._job = threading.Thread(
            target=self._finish_guarded,
            args=(mngr, slot, step, started),
            name=f"checkpoint-{step}",
            daemon=True,
        )
        self._job_clock, self._job_step = self.deadlines.save.start(), step
        self._job_phase = "waiting for orbax to finish writing"
        self._job.start()
        if isinstance(self.root, S3Location) and not self.background_upload:
            self.wait()  # async_upload=False: the upload completes before training goes on

    def _clear_step(self, slot: str, step: int, mngr: ocp.CheckpointManager) -> None:
        """Remove what an earlier run left at this step (a half-written save, or an old checkpoint)."""
        dest = self._slot_loc(slot).join(step)
        staged = os.path.join(mngr.directory, str(step))
        if not (os.path.exists(staged) or step in mngr.all_steps()):
            return  # on S3, what lies at the destination is cleared by the background upload
        if isinstance(self.root, LocalLocation):
            complete = self.files.exists(dest.join(MARKER))
            logger.warning(
                "%s at %s: replacing it with the new save",
                "an older checkpoint of the same step exists"
                if complete
                else "a half-written checkpoint exists",
                dest,
            )
        if distributed.is_primary():
            shutil.rmtree(staged, ignore_errors=True)
        distributed.barrier(f"clear_{slot}_{step}", self.deadlines.agreement)
        mngr.reload()

    def _finish_guarded(self, mngr, slot: str, step: int, started: float) -> None:
        try:
            self._finish(mngr, slot, step, started)
        except BaseException as err:  # handed to the main thread, raised at its next call
            self._job_error = self._save_failed(err, slot, step)

    def _finish(self, mngr, slot: str, step: int, started: float) -> None:
        mngr.wait_until_finished()
        if hasattr(mngr, "check_for_errors"):
            mngr.check_for_errors()
        staged = os.path.join(mngr.directory, str(step))
        dest = self._slot_loc(slot).join(step)
        save_deadline = self.deadlines.save
        if isinstance(self.root, S3Location):
            self._job_phase = f"uploading to {dest}"
            if not upload.upload(self.files, self._stage_root, slot, step, staged, dest, self.deadlines):
                self._failed_steps.add(step)
                self._delete_staged(mngr, slot, step)  # the staged copy is of no further use
                return
        else:
            if distributed.is_primary():
                self.files.write_text(dest.join(MARKER), marker_text(step, slot, ITEMS))
            distributed.barrier(f"committed_{slot}_{step}", save_deadline)
        logger.info("checkpoint of step %d complete at %s (%.1fs)", step, dest, time.perf_counter() - started)
        if not slot and self.hf_copy is not None:
            self._job_phase = "writing the Hugging Face copy"
            self._write_hf_copy(step, staged if isinstance(self.root, S3Location) else dest.path, dest)
        self._job_phase = "deleting old checkpoints"
        if slot:
            pruning.prune(self.files, self._slot_loc(slot), slot, 1, mngr, save_deadline)
        elif self.keep_last_n:
            pruning.prune(self.files, self._slot_loc(slot), slot, self.keep_last_n, mngr, save_deadline)
        if isinstance(self.root, S3Location):
            self._delete_staged(mngr, slot, step)

    def _write_hf_copy(self, step: int, source: str, checkpoint: Location) -> None:
        """Process 0 writes <save_ckpt_folder>/<step>_hf from the complete `checkpoint`, read from its
        local folder `source`; the others wait for it, as InternEvo's ranks do, so every process's
        next save starts together."""
        if distributed.is_primary():
            target = self.root.join(hf_copy_name(step))
            scratch = staging.hf_scratch_folder(self._stage_root)
            self.hf_copy.write(step, source, checkpoint, target, self.files, scratch)
        distributed.barrier(f"hf_copy_{step}", self.deadlines.save)

    def _delete_staged(self, mngr, slot: str, step: int) -> None:
        if distributed.is_primary():
            shutil.rmtree(os.path.join(mngr.directory, str(step)), ignore_errors=True)
        distributed.barrier(f"unstaged_{step}", self.deadlines.save)
        if distributed.is_primary():  # every process has read the flags by now
            upload.clear_flags(self._stage_root, slot, step)
        mngr.reload()

    def _save_failed(self, err: BaseException, slot: str, step: int) -> CheckpointError:
        """The one-paragraph error of a failed save of `step`, once what the save left is cleared away:
        orbax's threads are stopped (none may keep the process from exiting) and its half-written
        files removed."""
        mngr = self._orbax.pop(slot, None)  # the next save of the slot starts a fresh one
        if mngr is not None:
            failures.abandon(mngr)
        if isinstance(err, CheckpointError):
            return err
        where = self._slot_loc(slot).join(step)
        try:
            previous = self.latest()
        except Exception:  # the storage itself may be what failed
            previous = None
        kept = (
            f"the newest complete checkpoint is still {previous.location}"
            if previous
            else "no complete checkpoint exists yet"
        )
        removed_paths, left = self._remove_partial(slot, step)
        if left:
            removed = f", its half-written files could not all be removed (delete {', '.join(left)})"
        else:
            removed = ", the half-written save was removed" if removed_paths else ""
        staged_in = f" (staged in {self._stage_root})" if isinstance(self.root, S3Location) else ""
        if is_disk_full(err):
            return CheckpointError(
                f"The disk is full (No space left on device) while saving the checkpoint of step {step} to "
                f"{where}{staged_in}. It is not marked complete{removed}, and {kept}. "
                f"Free space there, lower ckpt.keep_last_n, or point ckpt.save_ckpt_folder (or "
                f"ckpt.async_upload_tmp_folder for S3) at a larger disk, then resume."
            )
        if failures.is_storage_failure(err):
            return CheckpointError(
                f"Saving the checkpoint of step {step} to {where}{staged_in} failed: "
                f"{failures.storage_reason(err)}. It is "
                f"not marked complete{removed}, and {kept}. Make the folder writable again (a file "
                f"system mounted read-write, write permission for this user) or point "
                f"ckpt.save_ckpt_folder (or ckpt.async_upload_tmp_folder for S3) at a writable folder, "
                f"then resume."
            )
        return CheckpointError(
            f"Saving the checkpoint of step {step} to {where} failed: {first_line(err)}. "
            f"It is not marked complete; {kept}."
        )

    def _remove_partial(self, slot: str, step: int) -> tuple[list[str], list[str]]:
        """Remove orbax's half-written folders of `step` (process 0); returns (removed, left behind).

        A step folder that has the marker is a complete checkpoint (the save failed after it, e.g.
        writing the Hugging Face copy) and is kept.
        """
        if not distributed.is_primary():
            return [], []
        base = self._orbax_dir(slot)
        try:
            names = os.listdir(base)
        except OSError:
            return [], []
        removed, left = [], []
        for name in names:
            path = os.path.join(base, name)
            if name == str(step) and os.path.exists(os.path.join(path, MARKER)):
                continue
            if name == str(step) or name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(path, ignore_errors=True)
                (left if os.path.lexists(path) else removed).append(path)
        return removed, left

    def check_background(self) -> None:
        """Raise the error of a background save that has finished and failed (nothing if none)."""
        if self._job is not None and not self._job.is_alive():
            self.wait()

    def wait(self) -> None:
        """Block until the in-flight save is complete, at most ckpt.save_timeout_s after it started;
        raise its error if it failed."""
        job, self._job = self._job, None
        if job is not None:
            self._join(job)
        err, self._job_error = self._job_error, None
        if err is not None:
            raise err

    def _join(self, job: threading.Thread) -> None:
        deadline, step = self.deadlines.save, self._job_step
        with logged_wait(
            f"the save of step {step} to finish",
            deadline,
            level=logging.INFO,
            progress=lambda: f"now {self._job_phase}",
        ):
            job.join(self._job_clock.left())
        if job.is_alive():
            self._stuck = True
            raise DeadlineExceeded(
                f"The save of step {step} to {self.root} did not finish within {deadline}; it was "
                f"still {self._job_phase}. The run stops instead of waiting longer. The checkpoint is "
                f"not known to be complete: resume takes the newest one with a {MARKER} marker. Check "
                f"the storage (disk, S3 endpoint) and raise {deadline.key} for large checkpoints or slow "
                f"storage."
            )

    def finalize(self) -> None:
        """Wait for the last save and close the orbax managers. Call in a `finally`."""
        # read before the `try`: inside the handler below, exc_info() is the save's own error
        propagating = sys.exc_info()[1]
        try:
            self.wait()
        except CheckpointError:
            if propagating is None:
                raise
            # An exception is already propagating out of training; report this one without hiding it.
            logger.exception("the last checkpoint save failed")
        finally:
            if not self._stuck:  # closing waits for orbax's writes, which a stuck save may never finish
                for mngr in self._orbax.values():
                    try:
                        mngr.close()
                    except Exception as err:  # the saves' own errors were reported by wait()
                        logger.warning(
                            "closing the checkpoint writer of %s: %s", mngr.directory, first_line(err)
                        )
                        failures.abandon(mngr)
            else:  # release what waits for signals; writes blocked in the file system stay
                for mngr in self._orbax.values():
                    failures.abandon(mngr, timeout_s=5.0)
            self._orbax.clear()
            self._quiet.remove()

    # -- reading --------------------------------------------------------------------------------
    def resume_point(self) -> CheckpointRef | None:
        """The newest complete checkpoint in the save folder, agreed by all processes; reports leftovers."""
        if self.root is None:
            return None
        found = self.scan()
        for loc in found.incomplete:
            logger.warning("ignoring the half-written checkpoint at %s (it has no %s marker)", loc, MARKER)
        return reading.agreed_newest(found, self.root, self.snapshot_root, self.deadlines.agreement)

    def read(self, source: Location, state, shardings, content: frozenset[str]) -> Restored:
        """Read the parts `content` selects from the checkpoint at `source` onto `shardings`."""
        return reading.read(
            source,
            state,
            shardings,
            content,
            tmp_folder=self.cfg.ckpt.async_upload_tmp_folder,
            run_dir=self.run_dir,
            shared_staging=self._staging_shared,
            current_cfg=self._config_json,
            timeouts=self.s3_timeouts,
            deadline=self.deadlines.agreement,
        )


def build_checkpoint_manager(cfg, run_dir: str) -> CheckpointManager:
    """The run's CheckpointManager, configured from `cfg.ckpt` (a disabled one when nothing is saved)."""
    return CheckpointManager(cfg, run_dir)
