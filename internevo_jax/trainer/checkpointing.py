"""Checkpoints in the loop: what to load at start, save after each step when asked, finish at the end.

`Checkpointing` combines run control (stop file, signals), the save policy (inside
CheckpointManager.maybe_save) and the checkpoint manager, and plugs into the loop as a callback.
"""

from __future__ import annotations

import logging

from internevo_jax.checkpoint import build_checkpoint_manager
from internevo_jax.config import Config
from internevo_jax.trainer.callbacks import Callback, Run
from internevo_jax.trainer.run_control import Poll, RunControl
from internevo_jax.trainer.startup import load_at_start

logger = logging.getLogger("internevo_jax")


class Checkpointing(Callback):
    """`restore_at_start(trainer, loader)` once, `after_step(state, ctx, loader)` every step, `close()`
    in a finally; as a callback, the loop calls the last two through its hooks.

    `wants_state(run, step)` polls the stop file and signals once per step and says whether the
    state after `step` is saved or the run stops there; only then does the loop wait for that
    step (`on_state`), every other step runs without a pause.
    """

    def __init__(self, cfg: Config, run_dir: str, *, install_signal_handlers: bool = True):
        self.cfg = cfg
        self.manager = build_checkpoint_manager(cfg, run_dir)
        # Without saving a signal keeps its usual effect: there would be nothing to save before exiting.
        self.run_control = RunControl(
            cfg.ckpt.stop_file_path,
            catch_signals=install_signal_handlers and self.manager.save_enabled,
            agreement=self.manager.deadlines.agreement,
        )
        self._polled: tuple[int, Poll] | None = None  # (step, answer) of the last poll, used once

    def restore_at_start(self, trainer, loader) -> None:
        """Load what the config asks for into the trainer's state and context, and the loader's position."""
        trainer.state = load_at_start(
            self.cfg, self.manager, trainer.state, trainer.shardings, trainer.context, loader
        )

    def after_step(self, state, ctx, loader) -> bool:
        """Save when the schedule, the stop file or a signal asks; True = stop now."""
        poll = self._poll(ctx.step)
        self._polled = None
        self.manager.maybe_save(state, ctx, loader, request=poll.request, reason=poll.reason)
        if not poll.exit:
            return False
        self.manager.wait()
        step = ctx.step
        if self.manager.save_enabled and self.manager.failed(step):
            logger.error(
                "%s: the checkpoint of step %d could NOT be saved (see above); stopping", poll.asked_by, step
            )
        elif self.manager.save_enabled:
            logger.warning("%s: saved the checkpoint of step %d; stopping", poll.asked_by, step)
        else:
            logger.warning(
                "%s: stopping at step %d (checkpoint saving is disabled, nothing saved)", poll.asked_by, step
            )
        return True

    def _poll(self, step: int) -> Poll:
        # one poll per step: it is a collective over processes when there are several
        if self._polled is None or self._polled[0] != step:
            self._polled = (step, self.run_control.poll(step))
        return self._polled[1]

    def close(self) -> None:
        """Wait for the last save, close the manager and put the signal handlers back."""
        try:
            self.manager.finalize()
        finally:
            self.run_control.close()

    # -- callback hooks ---------------------------------------------------------------------------
    def wants_state(self, run: Run, step: int) -> bool:
        poll = self._poll(run.context.step)
        return poll.exit or self.manager.save_due(run.context.step, poll.request)

    def on_state(self, run: Run, step: int) -> bool:
        return self.after_step(run.state, run.context, run.loader)

    def on_step_skipped(self, run: Run, step: int) -> bool:
        return self.after_step(run.state, run.context, run.loader)

    def on_train_end(self, run: Run) -> None:
        self.close()
