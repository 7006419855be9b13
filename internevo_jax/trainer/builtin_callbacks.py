"""The callbacks `fit` always runs: metric writers, validation every data.valid_every steps, the profiler."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import jax

from internevo_jax.config.schema import ProfilerConfig
from internevo_jax.monitor import logger, ordered
from internevo_jax.trainer.callbacks import Callback, Run

MEMORY_PROFILE = "memory.prof"


class WriteMetrics(Callback):
    """Hands every step and validation record to each writer (`write(record, kind)`, `close()`)."""

    def __init__(self, writers: Sequence):
        self.writers = tuple(writers)

    def on_step_end(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        for writer in self.writers:
            writer.write(record, kind="step")

    def on_validation(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        for writer in self.writers:
            writer.write(record, kind="validation")

    def on_train_end(self, run: Run) -> None:
        for writer in self.writers:
            writer.close()


class Evaluation(Callback):
    """Every data.valid_every steps, runs the validation sets on the state after that step and
    reports the result to `report`."""

    def __init__(self, report: Callback):
        self.report = report

    def wants_state(self, run: Run, step: int) -> bool:
        every = run.cfg.data.valid_every
        return bool(run.valid_sets) and every > 0 and step % every == 0

    def on_state(self, run: Run, step: int) -> None:
        # every process runs the forward passes (they are collective); the writers decide who reports
        val = run.trainer.evaluate(run.valid_sets)
        if val:
            self.report.on_validation(run, step, MappingProxyType(ordered({"step": step, **val})))


class Profiler(Callback):
    """A jax.profiler trace of monitor.profiler.active_steps steps, after skip_steps steps of the
    run (counted from where a resumed run starts), then a device-memory profile (memory.prof)."""

    def __init__(self, folder: str, settings: ProfilerConfig | None = None):
        self.folder, self.settings = folder, settings or ProfilerConfig()
        self.first = self.last = -1
        self.tracing = False

    def on_train_start(self, run: Run) -> None:
        self.first = run.context.step + self.settings.skip_steps + 1
        self.last = self.first + self.settings.active_steps - 1

    def on_step_start(self, run: Run, step: int) -> None:
        if step == self.first:
            # also a Perfetto trace (perfetto_trace.json.gz): opens in ui.perfetto.dev, and tools read it
            jax.profiler.start_trace(os.fspath(self.folder), create_perfetto_trace=True)
            self.tracing = True
            logger.info("profiling steps %d-%d into %s", self.first, self.last, self.folder)

    def on_step_end(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        self._stop_after(step)

    def on_step_skipped(self, run: Run, step: int) -> None:
        self._stop_after(step)

    def on_train_end(self, run: Run) -> None:
        self._stop_after(self.last)  # a run that ends inside the traced steps

    def _stop_after(self, step: int) -> None:
        if self.tracing and step >= self.last:
            jax.profiler.stop_trace()
            self.tracing = False
            if self.settings.memory_profile:
                # the live device buffers right after the window: parameters, optimizer state and
                # the next step's inputs (pprof format: `go tool pprof memory.prof`)
                path = os.path.join(self.folder, MEMORY_PROFILE)
                jax.profiler.save_device_memory_profile(path)
            logger.info("profile written to %s", self.folder)
