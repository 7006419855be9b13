"""Callbacks: what `fit` runs around each step, built-in behaviour and users' code alike.

`step` in every hook counts the steps done: 1 after the first step. Checkpoint names, validation
(data.valid_every), the stop file and run summaries count the same way, as InternEvo's step_count
does. The metrics line's `step` is the batch index, one less: InternEvo numbers its lines from 0.
Callbacks run on every process; only process 0 (`run.is_logger`) should write files or logs.

`fit` keeps the device busy: it queues step N+1 before it reads the metrics of step N, so
`add_metrics` and `on_step_end` for step N run while step N+1 is computing, and `run.state` there
may already be that of step N+1. A callback that needs the state after exactly step N says so in
`wants_state`; the loop then waits for step N and calls `on_state` before queueing the next step
(validation and checkpoint saves work this way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from internevo_jax.config import Config
from internevo_jax.data import StreamingTrainLoader, TrainLoader, ValidSet
from internevo_jax.monitor import logger
from internevo_jax.trainer.state import TrainContext, TrainState
from internevo_jax.trainer.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Run:
    """What a callback sees of the run: the Trainer, the loaders, the config and the run folder."""

    cfg: Config
    trainer: Trainer
    loader: TrainLoader | StreamingTrainLoader
    valid_sets: Mapping[str, ValidSet]  # empty when data.valid_every is 0
    run_dir: str
    is_logger: bool  # process 0, the one that writes the metrics line and the run folder's files

    @property
    def context(self) -> TrainContext:
        """Step, consumed tokens and skipped batches so far."""
        return self.trainer.context

    @property
    def state(self) -> TrainState:
        """The current train state (params, optimizer and loss-scaler state)."""
        return self.trainer.state


class Callback:
    """Hooks `fit` calls; every one does nothing here, override the ones you need."""

    def on_train_start(self, run: Run) -> None:
        """Once, before the first step; a resumed run's state and counters are already restored."""

    def on_step_start(self, run: Run, step: int) -> None:
        """Before the step's batch is loaded."""

    def add_metrics(self, run: Run, step: int, record: Mapping[str, object]) -> Mapping[str, object] | None:
        """Metrics to add to the step's `record` (read-only here); every writer shows them, after
        the built-in ones. Called after each trained step, before any `on_step_end`."""
        return None

    def on_step_end(self, run: Run, step: int, record: Mapping[str, object]) -> bool | None:
        """After a trained step, with its full record (read-only). Return True to stop the run: the
        step already queued after this one (if any) still completes, with its record."""
        return None

    def wants_state(self, run: Run, step: int) -> bool:
        """Called right after step `step` is queued: True to get `on_state` for this step. Every
        callback is asked, on every process, every step; keep it cheap."""
        return False

    def on_state(self, run: Run, step: int) -> bool | None:
        """For a step where this callback's `wants_state` said True: after the step's `on_step_end`,
        before the next step is queued; `run.state` is the state after exactly `step` steps
        (reading its values waits for the device). Return True to stop the run."""
        return None

    def on_step_skipped(self, run: Run, step: int) -> bool | None:
        """After a batch listed in data.skip_batches was loaded and not trained on. True stops the run."""
        return None

    def on_validation(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        """After validation: `record` holds `step` and `val/<name>_loss`, `_acc`, `_plex`."""

    def on_exception(self, run: Run, error: BaseException) -> None:
        """When the run ends by an exception (`error`, raised again afterwards), before
        `on_train_end`."""

    def on_train_end(self, run: Run) -> None:
        """Once, when the run ends, also when it ends by an exception."""


class CallbackList(Callback):
    """Several callbacks as one: each hook runs in list order (`on_train_end` in reverse, like
    nested `with` blocks); a stop request from any of them stops the run, after all have run."""

    def __init__(self, callbacks: Sequence[Callback] = ()):
        self.callbacks = tuple(callbacks)
        self._wanting: list[Callback] = []
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"{cb!r} is not an internevo_jax.trainer.Callback")

    def on_train_start(self, run: Run) -> None:
        for cb in self.callbacks:
            cb.on_train_start(run)

    def on_step_start(self, run: Run, step: int) -> None:
        for cb in self.callbacks:
            cb.on_step_start(run, step)

    def add_metrics(self, run: Run, step: int, record: Mapping[str, object]) -> dict[str, object]:
        added: dict[str, object] = {}
        for cb in self.callbacks:
            # each callback sees what the ones before it added
            more = cb.add_metrics(run, step, MappingProxyType({**record, **added}))
            for key, value in (more or {}).items():
                if key in record or key in added:
                    # a silent overwrite would make the line disagree with InternEvo's or another writer's
                    raise ValueError(
                        f"{type(cb).__name__}.add_metrics: metric {key!r} is already in the record"
                    )
                added[key] = value
        return added

    def on_step_end(self, run: Run, step: int, record: Mapping[str, object]) -> bool:
        stops = [cb.on_step_end(run, step, record) for cb in self.callbacks]
        return any(bool(s) for s in stops)

    def wants_state(self, run: Run, step: int) -> bool:
        # every callback is asked (a poll may be a collective over processes); those that said
        # True get `on_state` for this step
        self._wanting = [cb for cb in self.callbacks if cb.wants_state(run, step)]
        return bool(self._wanting)

    def on_state(self, run: Run, step: int) -> bool:
        wanting, self._wanting = self._wanting, []
        stops = [cb.on_state(run, step) for cb in wanting]
        return any(bool(s) for s in stops)

    def on_step_skipped(self, run: Run, step: int) -> bool:
        stops = [cb.on_step_skipped(run, step) for cb in self.callbacks]
        return any(bool(s) for s in stops)

    def on_validation(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        for cb in self.callbacks:
            cb.on_validation(run, step, record)

    def on_exception(self, run: Run, error: BaseException) -> None:
        # the run's own error is what propagates: a callback failing here is logged, not raised
        for cb in self.callbacks:
            try:
                cb.on_exception(run, error)
            except Exception:  # noqa: BLE001
                logger.exception("%s.on_exception failed", type(cb).__name__)

    def on_train_end(self, run: Run) -> None:
        # every callback gets to clean up; the first failure is raised once all have run
        error = None
        for cb in reversed(self.callbacks):
            try:
                cb.on_train_end(run)
            except Exception as err:  # noqa: BLE001 - re-raised below
                error = error or err
        if error is not None:
            raise error
