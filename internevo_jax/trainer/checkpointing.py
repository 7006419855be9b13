"""Checkpoints as a callback: restore before training, save when asked after each step, finish at the end."""

from __future__ import annotations

from collections.abc import Mapping

from internevo_jax.checkpoint import build_checkpoint_manager
from internevo_jax.config import Config
from internevo_jax.trainer.callbacks import Callback, Run
from internevo_jax.trainer.trainer import Trainer


class Checkpointing(Callback):
    """The run's checkpoint manager behind the callback hooks (see docs/checkpoint.md)."""

    def __init__(self, cfg: Config, run_dir: str):
        self.manager = build_checkpoint_manager(cfg, run_dir)

    def resume(self, trainer: Trainer, loader) -> None:
        """Restore what cfg.ckpt asks for into `trainer` and `loader`; `fit` calls it before any hook."""
        trainer.state = self.manager.resume(trainer.state, trainer.shardings, trainer.context, loader)

    def on_step_end(self, run: Run, step: int, record: Mapping[str, object]) -> bool:
        return self.manager.maybe_save(run.state, run.context, run.loader)  # schedule, stop file or signal

    def on_step_skipped(self, run: Run, step: int) -> bool:
        return self.manager.maybe_save(run.state, run.context, run.loader)

    def on_train_end(self, run: Run) -> None:
        self.manager.finalize()
