"""The training run's checkpointing: when to save, saving asynchronously, resuming.

Saving goes through orbax CheckpointManagers (one per slot: regular checkpoints, snapshot/0,
snapshot/1). A save returns once the arrays are copied off the devices; a background thread then
waits for orbax to finish writing, uploads to S3 when the folder is `boto3:`, writes the COMMITTED
marker last and prunes old checkpoints. Only one save is in flight: the next one (and the end of
training) waits for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time

import orbax.checkpoint as ocp

from internevo_jax.checkpoint import distributed
from internevo_jax.checkpoint.content import (
    normalize_content,
    optimizer_tree,
    restores_context,
    with_schedule_from,
)
from internevo_jax.checkpoint.errors import CheckpointError, StorageUnreachable, first_line, is_disk_full
from internevo_jax.checkpoint.files import LocalFiles
from internevo_jax.checkpoint.layout import (
    ITEMS,
    MARKER,
    REGULAR,
    SNAPSHOT_SLOTS,
    CheckpointRef,
    Scan,
    looks_like_checkpoint,
    marker_text,
    scan,
    scan_folder,
    slot_location,
)
from internevo_jax.checkpoint.restore import read_checkpoint
from internevo_jax.checkpoint.s3 import S3Store
from internevo_jax.checkpoint.signals import SignalCatcher
from internevo_jax.checkpoint.stopfile import SAVE, SAVE_AND_EXIT, StopFile
from internevo_jax.checkpoint.storage import LocalLocation, Location, S3Location, parse_location
from internevo_jax.hf.loader import load_hf_into

logger = logging.getLogger("internevo_jax")

ASYNC_TIMEOUT_S = 7200  # orbax's limit for one background write; large models on slow disks need long
# S3 transfers of a save: attempts per operation, and the pause before the first retry (doubled after each).
UPLOAD_ATTEMPTS = 3
UPLOAD_BACKOFF_S = 2.0


def files_for(location: Location):
    """The file API (LocalFiles or S3Store) for a location."""
    if isinstance(location, S3Location):
        return S3Store(location.settings)
    return LocalFiles()


def _positive(value) -> int | None:
    return int(value) if value and value > 0 else None


class CheckpointManager:
    """Saves and restores a run's TrainState, counters and data position; see the module docstring."""

    def __init__(self, cfg, run_dir: str, *, install_signal_handlers: bool = True):
        ck = cfg.ckpt
        self.cfg = cfg
        self.run_dir = run_dir
        self.every = _positive(ck.checkpoint_every)
        self.snapshot_every = _positive(ck.oss_snapshot_freq)
        self.keep_last_n = _positive(ck.keep_last_n)
        self.total_steps = int(cfg.data.total_steps)
        self.background_upload = bool(ck.async_upload)
        self.save_enabled = bool(ck.enable_save_ckpt and ck.save_ckpt_folder)
        self.root: Location | None = (
            parse_location(ck.save_ckpt_folder, key="ckpt.save_ckpt_folder") if ck.save_ckpt_folder else None
        )
        self.files = files_for(self.root) if self.root is not None else None
        self.snapshot_root = self._snapshot_folder(ck.snapshot_ckpt_folder)
        self._config_json = json.loads(json.dumps(cfg.to_dict(), default=str))
        self._orbax: dict[str, ocp.CheckpointManager] = {}
        self._job: threading.Thread | None = None
        self._job_error: BaseException | None = None
        self._saved_steps: set[int] = set()
        self._failed_steps: set[int] = set()  # saves reported as not saved (storage unreachable)
        self._slot_steps: dict[str, int] | None = None  # newest complete step per snapshot slot
        self._stage_root = self._staging_folder() if self.root is not None else None
        self._staging_shared = False  # set once the hosts are known to share the staging folder
        self.stop_file = StopFile(ck.stop_file_path) if ck.stop_file_path else None
        self.signals = None
        # Handlers go in at the first maybe_save, so a run that fails before training leaves none behind.
        self._want_signals = install_signal_handlers and self.save_enabled
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

    def _staging_folder(self) -> str:
        """Where orbax writes: the folder itself when local; a staging folder for S3.

        Orbax cannot write to s3:// (its TensorStore specs only know local paths and GCS), so an S3
        checkpoint is written locally first and uploaded by the background thread, as InternEvo's
        async_upload does.
        """
        if isinstance(self.root, LocalLocation):
            return self.root.path
        base = self.cfg.ckpt.async_upload_tmp_folder or os.path.join(self.run_dir, "ckpt_staging")
        return os.path.join(base, "internevo_jax", self.root.bucket, *self.root.prefix.split("/"))

    def _check_destination(self) -> None:
        if isinstance(self.root, S3Location):
            self.files.check_bucket(self.root)
            self._check_shared_staging()
            logger.info(
                "checkpoints go to %s (endpoint %s), staged in %s",
                self.root.url,
                self.root.settings.endpoint_name,
                self._stage_root,
            )
        else:
            try:
                os.makedirs(self.root.path, exist_ok=True)
            except OSError as err:
                raise CheckpointError(
                    f"Cannot create the checkpoint folder {self.root.path}: {first_line(err)}. Set "
                    f"ckpt.save_ckpt_folder to a writable folder."
                ) from err

    def _check_shared_staging(self) -> None:
        """Multi-host S3 saving needs a staging folder all hosts share (orbax writes one folder)."""
        try:
            os.makedirs(self._stage_root, exist_ok=True)
        except OSError as err:
            raise CheckpointError(
                f"Cannot create the staging folder {self._stage_root} for checkpoints bound for {self.root}: "
                f"{first_line(err)}. Set ckpt.async_upload_tmp_folder to a writable local folder."
            ) from err
        import jax

        if jax.process_count() == 1:
            self._staging_shared = True
            return
        token = int.from_bytes(os.urandom(3), "little")  # fits int32: JAX collectives run without x64
        probe = os.path.join(self._stage_root, ".shared_probe")
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
                f"Saving to {self.root} from {jax.process_count()} processes needs a staging folder "
                f"that every host sees, but {self._stage_root} is not shared between hosts. Set "
                f"ckpt.async_upload_tmp_folder to a folder on a shared file system."
            )
        self._staging_shared = True

    def _orbax_for(self, slot: str) -> ocp.CheckpointManager:
        if slot not in self._orbax:
            options = ocp.CheckpointManagerOptions(
                create=True,
                enable_async_checkpointing=True,
                async_options=ocp.AsyncOptions(timeout_secs=ASYNC_TIMEOUT_S),
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

    # -- saving ---------------------------------------------------------------------------------
    def maybe_save(self, state, ctx, loader) -> bool:
        """Call after every step. Saves when the schedule, the stop file or a signal asks; True = stop now."""
        self._raise_finished_job_error()
        if self._want_signals:
            self._want_signals = False
            catcher = SignalCatcher()
            if catcher.install():
                self.signals = catcher
        step = ctx.step
        stop_action = self.stop_file.action(step) if self.stop_file else 0
        signalled = int(bool(self.signals and self.signals.received))
        # Every process must take the same decision: a save is a collective operation.
        signalled, stop_action = distributed.agree_max([signalled, stop_action])
        signalled = bool(signalled)
        exit_now = signalled or stop_action == SAVE_AND_EXIT
        slot = None
        if self.save_enabled and step not in self._saved_steps:
            if (
                exit_now
                or stop_action == SAVE
                or (self.every and step % self.every == 0)
                or step == self.total_steps
            ):
                slot = REGULAR
            elif self.snapshot_every and step % self.snapshot_every == 0:
                slot = self._next_snapshot_slot()
        if slot is not None:
            reason = "signal" if signalled else "stop file" if stop_action else "schedule"
            self.save(state, ctx, loader, slot=slot, reason=reason)
        if exit_now:
            self.wait()
            why = f"received {self.signals.name}" if signalled else f"stop file {self.stop_file.path}"
            if self.save_enabled and step in self._failed_steps:
                logger.error(
                    "%s: the checkpoint of step %d could NOT be saved (see above); stopping", why, step
                )
            elif self.save_enabled:
                logger.warning("%s: saved the checkpoint of step %d; stopping", why, step)
            else:
                logger.warning(
                    "%s: stopping at step %d (checkpoint saving is disabled, nothing saved)", why, step
                )
        return exit_now

    def _next_snapshot_slot(self) -> str:
        # Overwrite the slot holding the older snapshot, never the newest one.
        if self._slot_steps is None:
            self._slot_steps = {}
            for slot in SNAPSHOT_SLOTS:
                refs = scan_folder(self.files, self._slot_loc(slot), slot).complete
                self._slot_steps[slot] = refs[-1].step if refs else -1
        return min(SNAPSHOT_SLOTS, key=lambda s: (self._slot_steps[s], s))

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
        try:
            mngr.save(step, args=args, force=True)
        except Exception as err:
            raise self._save_failed(err, slot, step) from err
        self._saved_steps.add(step)
        if slot and self._slot_steps is not None:
            self._slot_steps[slot] = step
        where = self._slot_loc(slot).join(step)
        logger.info(
            "saving %s of step %d to %s (%s; %.2fs blocking)",
            "checkpoint" if not slot else slot,
            step,
            where,
            reason,
            time.perf_counter() - started,
        )
        self._job = threading.Thread(
            target=self._finish_guarded,
            args=(mngr, slot, step, started),
            name=f"checkpoint-{step}",
            daemon=True,
        )
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
        distributed.barrier(f"clear_{slot}_{step}")
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
        if isinstance(self.root, S3Location):
            if not self._upload(slot, step, staged, dest):
                self._delete_staged(mngr, slot, step)  # the staged copy is of no further use
                return
        else:
            if distributed.is_primary():
                self.files.write_text(dest.join(MARKER), marker_text(step, slot, ITEMS))
            distributed.barrier(f"committed_{slot}_{step}")
        logger.info("checkpoint of step %d complete at %s (%.1fs)", step, dest, time.perf_counter() - started)
        if slot:
            self._prune(slot, mngr, keep=1)
        elif self.keep_last_n:
            self._prune(slot, mngr, keep=self.keep_last_n)
        if isinstance(self.root, S3Location):
            self._delete_staged(mngr, slot, step)

    # -- S3 upload: retried, and never fatal to training when the endpoint is unreachable ----------
    def _retrying(self, what: str, fn, step: int):
        """fn(), retried UPLOAD_ATTEMPTS times with doubling pauses while the endpoint is unreachable."""
        delay = UPLOAD_BACKOFF_S
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                return fn()
            except StorageUnreachable as err:
                if attempt == UPLOAD_ATTEMPTS:
                    raise
                logger.warning(
                    "%s for the checkpoint of step %d failed (attempt %d of %d): %s Retrying in %.1fs.",
                    what,
                    step,
                    attempt,
                    UPLOAD_ATTEMPTS,
                    err,
                    delay,
                )
                time.sleep(delay)
                delay *= 2

    def _flag(self, slot: str, step: int, name: str) -> str:
        """A flag file in the (shared) staging area through which the processes agree on an upload."""
        folder = self._stage_root.rstrip("/") + ".uploads"
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{slot.replace('/', '-') or 'regular'}-{step}.{name}")

    def _upload(self, slot: str, step: int, staged: str, dest: S3Location) -> bool:
        """Clear the destination, upload every process's files, write the marker; False = not saved.

        An unreachable endpoint is retried (UPLOAD_ATTEMPTS per operation); if it stays unreachable
        the checkpoint is reported as not saved (no marker) and training goes on: the next scheduled
        save tries again. The processes agree through flag files in the shared staging folder, so a
        failure on any of them leaves the checkpoint unmarked on all.
        """
        import jax

        me, count = _process_index(), jax.process_count()
        failure = None
        if distributed.is_primary():
            try:
                stale = self._retrying("checking the destination", lambda: self.files.list_files(dest), step)
                if stale:
                    logger.warning("a half-written or older checkpoint exists at %s: replacing it", dest)
                    self._retrying("clearing the destination", lambda: self.files.delete_tree(dest), step)
                open(self._flag(slot, step, "cleared"), "w").close()
            except StorageUnreachable as err:
                failure = err
        distributed.barrier(f"cleared_{slot}_{step}")
        if os.path.exists(self._flag(slot, step, "cleared")):
            try:
                uploaded = self._retrying(
                    "uploading",
                    lambda: self.files.upload_tree(staged, dest, select=lambda rel: _file_owner(rel) == me),
                    step,
                )
                logger.debug("process %d uploaded %d files of step %d", me, uploaded, step)
                open(self._flag(slot, step, f"p{me}"), "w").close()
            except StorageUnreachable as err:
                failure = err
        distributed.barrier(f"uploaded_{slot}_{step}")
        if distributed.is_primary() and all(
            os.path.exists(self._flag(slot, step, f"p{i}")) for i in range(count)
        ):
            try:
                self._retrying(
                    "writing the commit marker",
                    lambda: self.files.write_text(dest.join(MARKER), marker_text(step, slot, ITEMS)),
                    step,
                )
                open(self._flag(slot, step, "committed"), "w").close()
            except StorageUnreachable as err:
                failure = err
        distributed.barrier(f"committed_{slot}_{step}")
        committed = os.path.exists(self._flag(slot, step, "committed"))
        if not committed:
            self._failed_steps.add(step)
            if failure is not None or distributed.is_primary():
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

    def _prune(self, slot: str, mngr, keep: int) -> None:
        refs = scan_folder(self.files, self._slot_loc(slot), slot).complete
        old = refs[:-keep] if len(refs) > keep else []
        if not old:
            return
        if distributed.is_primary():
            for ref in old:
                self.files.delete_tree(ref.location)
                logger.info("deleted old %s of step %d (%s)", ref.kind, ref.step, ref.location)
        distributed.barrier(f"pruned_{slot}_{old[-1].step}")
        mngr.reload()

    def _delete_staged(self, mngr, slot: str, step: int) -> None:
        if distributed.is_primary():
            shutil.rmtree(os.path.join(mngr.directory, str(step)), ignore_errors=True)
        distributed.barrier(f"unstaged_{step}")
        if distributed.is_primary():  # every process has read the flags by now
            for name in ("cleared", "committed", *(f"p{i}" for i in range(_process_count()))):
                with contextlib.suppress(OSError):
                    os.remove(self._flag(slot, step, name))
        mngr.reload()

    def _save_failed(self, err: BaseException, slot: str, step: int) -> CheckpointError:
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
        if is_disk_full(err):
            self._remove_partial(slot, step)
            staging = f" (staged in {self._stage_root})" if isinstance(self.root, S3Location) else ""
            return CheckpointError(
                f"The disk is full (No space left on device) while saving the checkpoint of step {step} to "
                f"{where}{staging}. The half-written save was removed and {kept}. "
                f"Free space there, lower ckpt.keep_last_n, or point ckpt.save_ckpt_folder (or "
                f"ckpt.async_upload_tmp_folder for S3) at a larger disk, then resume."
            )
        return CheckpointError(
            f"Saving the checkpoint of step {step} to {where} failed: {first_line(err)}. "
            f"It is not marked complete; {kept}."
        )

    def _remove_partial(self, slot: str, step: int) -> None:
        if not distributed.is_primary():
            return
        base = self._orbax_dir(slot)
        try:
            for name in os.listdir(base):
                if name == str(step) or name.startswith(f"{step}.orbax-checkpoint-tmp"):
                    shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            pass

    def _raise_finished_job_error(self) -> None:
        if self._job is not None and not self._job.is_alive():
            self.wait()

    def wait(self) -> None:
        """Block until the in-flight save is complete; raise its error if it failed."""
        job, self._job = self._job, None
        if job is not None:
            job.join()
        err, self._job_error = self._job_error, None
        if err is not None:
            raise err

    def finalize(self) -> None:
        """Wait for the last save and put the signal handlers back. Call in a `finally`."""
        try:
            self.wait()
        except CheckpointError:
            if sys.exc_info()[1] is None:
                raise
            # An exception is already propagating out of training; report this one without hiding it.
            logger.exception("the last checkpoint save failed")
        finally:
            if self.signals is not None:
                self.signals.uninstall()
            for mngr in self._orbax.values():
                mngr.close()
            self._orbax.clear()

    # -- resuming -------------------------------------------------------------------------------
    def resume(self, state, shardings, ctx, loader):
        """Restore what the config asks for and return the new state; `ctx` and `loader` are updated in place.

        auto_resume=True: the newest complete checkpoint in save_ckpt_folder, everything in it, or
        nothing; ckpt.load_ckpt_info is then not used, as in InternEvo (whose example configs keep a
        placeholder load path next to auto_resume). auto_resume=False: ckpt.load_ckpt_info, if set.
        """
        ck = self.cfg.ckpt
        source, content = None, None
        info = ck.load_ckpt_info
        if ck.auto_resume:
            if info is not None and info.path:
                logger.info(
                    "auto_resume=True: ckpt.load_ckpt_info (%s) is not used; set ckpt.auto_resume=False "
                    "to load it",
                    info.path,
                )
            info = None
            if self.root is not None:
                found = self.scan()
                for loc in found.incomplete:
                    logger.warning(
                        "ignoring the half-written checkpoint at %s (it has no %s marker)", loc, MARKER
                    )
                newest = self._agreed_newest(found)
                if newest is not None:
                    source, content = newest.location, normalize_content(("all",))
                    logger.info(
                        "auto_resume: resuming from the %s of step %d at %s",
                        newest.kind,
                        newest.step,
                        newest.location,
                    )
        if info is not None and info.path:
            content = normalize_content(info.content)
            location = parse_location(info.path, key="ckpt.load_ckpt_info.path")
            if info.ckpt_type == "hf":
                return load_hf_into(state, shardings, info.path, self.cfg, content)
            if info.ckpt_type != "internevo":
                raise CheckpointError(
                    f'ckpt.load_ckpt_info.ckpt_type={info.ckpt_type!r} is not supported; use "internevo" for '
                    f'checkpoints saved by this trainer or "hf" for Hugging Face weights.'
                )
            source = self._resolve_load_path(location)
            logger.info("loading %s from %s", ", ".join(sorted(content)), source)
        if source is None:
            logger.info("no checkpoint to resume from: training from scratch")
            return state
        restored = self._read(source, state, shardings, content)
        return self._apply(restored, state, ctx, loader, content)

    def _agreed_newest(self, found: Scan) -> CheckpointRef | None:
        newest = found.newest()
        slots = (REGULAR, *SNAPSHOT_SLOTS)
        step, slot_index = distributed.from_primary(
            [newest.step if newest else -1, slots.index(newest.slot) if newest else 0]
        )
        if step < 0:
            return None
        slot = slots[slot_index]
        return CheckpointRef(step, slot, self._slot_loc(slot).join(step))

    def _resolve_load_path(self, location: Location) -> Location:
        files = files_for(location)
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

    def _read(self, source: Location, state, shardings, content) -> dict:
        if isinstance(source, LocalLocation):
            return read_checkpoint(
                source.path,
                state=state,
                shardings=shardings,
                content=content,
                shown=str(source),
                current_cfg=self._config_json,
            )
        # S3: fetch the needed parts into the staging folder, restore from there, then drop the copy.
        # One download serves all processes when they share the folder; otherwise each fetches its own.
        import jax

        shared = self._staging_shared or jax.process_count() == 1
        base = self.cfg.ckpt.async_upload_tmp_folder or os.path.join(self.run_dir, "ckpt_staging")
        local = os.path.join(
            base,
            "internevo_jax",
            "restore" if shared else f"restore-p{jax.process_index()}",
            source.bucket,
            *source.prefix.split("/"),
        )
        downloader = distributed.is_primary() if shared else True
        needed = {"model"} if "model" in content else set()
        needed |= {"optimizer"} if content & {"optimizer", "scheduler"} else set()
        needed |= {"context", "sampler", "config"}
        if downloader:
            shutil.rmtree(local, ignore_errors=True)
            store = files_for(source)
            count = store.download_tree(source, local, select=lambda rel: rel.split("/", 1)[0] in needed)
            logger.info("downloaded %d files of %s to %s", count, source, local)
        distributed.barrier(f"downloaded_{source.prefix}")
        try:
            return read_checkpoint(
                local,
                state=state,
                shardings=shardings,
                content=content,
                shown=str(source),
                current_cfg=self._config_json,
            )
        finally:
            distributed.barrier(f"restored_{source.prefix}")
            if downloader:
                shutil.rmtree(local, ignore_errors=True)

    @staticmethod
    def _apply(restored: dict, state, ctx, loader, content):
        if "model" in restored:
            state = state.replace(params=restored["model"])
        if "optimizer" in restored:
            saved = restored["optimizer"]
            if "optimizer" in content:
                opt_state = saved["opt_state"]
                if "scheduler" not in content:  # restart the lr/beta2 schedules, keep the moments
                    opt_state = with_schedule_from(opt_state, state.opt_state)
                state = state.replace(opt_state=opt_state, loss_scale=saved["loss_scale"])
            else:  # scheduler only: fresh moments, the schedules continue where they were
                state = state.replace(opt_state=with_schedule_from(state.opt_state, saved["opt_state"]))
        if restores_context(content) and "context" in restored:
            for key, value in restored["context"].items():
                if hasattr(ctx, key):
                    setattr(ctx, key, int(value))
        if "sampler" in restored and loader is not None:
            _restore_loader(loader, restored["sampler"])
        return state


def _restore_loader(loader, saved: dict) -> None:
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


def _process_count() -> int:
    import jax

    return jax.process_count()


def _process_index() -> int:
    import jax

    return jax.process_index()


def _file_owner(rel: str) -> int:
    """Which process uploads a staged file: the one whose shard it is, process 0 for shared files.

    Orbax puts each process's array data under `ocdbt.process_<i>/` and its array metadata under
    `array_metadatas/process_<i>`; everything else is written once by process 0.
    """
    for part in rel.split("/"):
        for prefix in ("ocdbt.process_", "process_"):
            if part.startswith(prefix) and part[len(prefix) :].isdigit():
                return int(part[len(prefix) :])
    return 0


def build_checkpoint_manager(cfg, run_dir: str, *, install_signal_handlers: bool = True) -> CheckpointManager:
    """The run's CheckpointManager, configured from `cfg.ckpt` (a disabled one when nothing is saved)."""
    return CheckpointManager(cfg, run_dir, install_signal_handlers=install_signal_handlers)
