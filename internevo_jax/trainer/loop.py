"""The training loop: build a Trainer from the config, run the steps, call the callbacks."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from types import MappingProxyType

import jax
import numpy as np

from internevo_jax.config import Config
from internevo_jax.data import build_train_loader, build_valid_loaders
from internevo_jax.monitor import logger, metric_writers
from internevo_jax.names import RUNS_ROOT
from internevo_jax.parallel import local_dp_ranks
from internevo_jax.trainer.alerting import alerting_callbacks
from internevo_jax.trainer.build import build_trainer
from internevo_jax.trainer.builtin_callbacks import Evaluation, Profiler, WriteMetrics
from internevo_jax.trainer.callbacks import Callback, CallbackList, Run
from internevo_jax.trainer.checkpointing import Checkpointing
from internevo_jax.trainer.metrics import dense_params, model_flops_per_token, peak_flops_for, step_record
from internevo_jax.trainer.run_summary import RunTimer, describe, write_summary
from internevo_jax.trainer.state import TrainState
from internevo_jax.trainer.step import LossFn
from internevo_jax.trainer.trainer import PendingStep


@dataclasses.dataclass
class FitResult:
    """What a finished run leaves behind."""

    state: TrainState
    context: object
    losses: list[float]
    run_dir: str


def resolve_run_dir(cfg: Config) -> str:
    """The run folder: `run_dir` from the config, else runs/<JOB_NAME>."""
    return cfg.run_dir or os.path.join(RUNS_ROOT, cfg.job_name)


def write_resolved_config(cfg: Config, run_dir: str) -> None:
    """Write <run_dir>/config.json atomically."""
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, "config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(run_dir, "config.json"))


def fit(
    cfg: Config,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: LossFn | None = None,
    grad_hook: Callable | None = None,
    profiling: bool = False,
    max_steps: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train `cfg` until data.total_steps (or `max_steps` steps) and return the result.

    Around each step run, in this order: alerts, heartbeat and hang watchdog (when monitor.alert
    names a destination; docs/alerts.md), the profiler (`profiling`), the metric writers (the stdout
    line and <run_dir>/metrics.jsonl, on process 0), `callbacks` in the order given, validation every
    data.valid_every steps, checkpointing. The checkpoint is restored before any hook runs.
    Steps are queued one ahead of the metrics (see `trainer.callbacks`). At the end the run's
    summary (compile time, time to the first step, median step time, peak device memory) is
    logged and written to <run_dir>/run_summary.json.
    """
    user_callbacks = CallbackList(callbacks)  # checked before anything is compiled
    timer = RunTimer()
    timer.start()
    try:
        return _fit(cfg, timer, devices, loss_fn, grad_hook, profiling, max_steps, user_callbacks)
    finally:
        timer.stop()


def _fit(cfg, timer, devices, loss_fn, grad_hook, profiling, max_steps, user_callbacks) -> FitResult:
    trainer = build_trainer(cfg, devices=devices, loss_fn=loss_fn, grad_hook=grad_hook)
    sizes, mesh = trainer.sizes, trainer.mesh
    devices = list(mesh.devices.flat)
    is_logger = jax.process_index() == 0
    n_dense = dense_params(trainer.state.params, getattr(getattr(trainer.model, "args", None), "moe", None))
    n_total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(trainer.state.params))
    logger.info("parameters: %.2fM total, %.2fM without the input embedding", n_total / 1e6, n_dense / 1e6)

    dp_ranks = local_dp_ranks(mesh)
    loader = build_train_loader(cfg, dp_size=sizes.dp, dp_ranks=dp_ranks, vocab_size=cfg.model.vocab_size)
    valid_sets = {}
    if cfg.data.valid_every > 0:
        valid_sets = build_valid_loaders(
            cfg, dp_size=sizes.dp, dp_ranks=dp_ranks, vocab_size=cfg.model.vocab_size
        )

    run_dir = resolve_run_dir(cfg)
    checkpointing = Checkpointing(cfg, run_dir)
    checkpointing.restore_at_start(trainer, loader)
    last_step = cfg.data.total_steps if max_steps is None else min(cfg.data.total_steps, max_steps)
    writers = []
    if is_logger:
        write_resolved_config(cfg, run_dir)
        writers = metric_writers(
            cfg, run_dir, done_steps=trainer.context.step, last_step=last_step, devices=len(devices)
        )
        logger.info("run folder %s", os.path.abspath(run_dir))
    # validation records go to the writers and the user's callbacks
    reporters = CallbackList([WriteMetrics(writers), user_callbacks])
    hooks = CallbackList(
        [
            # first: its watchdog is armed before, and its end-of-run alert sent after, all the others
            *alerting_callbacks(cfg, is_logger=is_logger),
            *([Profiler(os.path.join(run_dir, "profile"), cfg.monitor.profiler)] if profiling else []),
            reporters,
            Evaluation(report=reporters),
            checkpointing,
        ]
    )
    run = Run(
        cfg=cfg, trainer=trainer, loader=loader, valid_sets=valid_sets, run_dir=run_dir, is_logger=is_logger
    )

    peak = peak_flops_for(devices[0].device_kind)
    flops_per_token = model_flops_per_token(cfg, n_dense)
    ctx = trainer.context
    losses: list[float] = []
    batches = Prefetch(loader, trainer.put)

    def report(pending: InFlight) -> bool:
        """Read a dispatched step's metrics, write its record, run the record hooks; True = stop."""
        metrics = trainer.finish(pending.step)
        timer.step_done(metrics["step_time"])
        step = pending.step.index + 1  # steps done, as the hooks count them
        losses.append(metrics["loss"])
        if metrics["overflow"]:
            logger.warning(
                "step %d: non-finite gradients, update skipped (loss scale now %g)",
                pending.step.index,
                metrics["loss_scale"],
            )
        record = step_record(
            cfg,
            step=pending.step.index,  # InternEvo's line numbers batches from 0
            metrics=metrics,
            # tokens as of this step (later steps may be queued); skipped batches up to this step
            context=dataclasses.replace(ctx, num_consumed_tokens=pending.step.consumed_tokens),
            segment_ids=pending.segment_ids,
            dp_size=sizes.dp,
            world=len(devices),
            flops_per_token=flops_per_token,
            peak_flops=peak,
        )
        record.update(hooks.add_metrics(run, step, record))
        # a stop comes from a callback, the stop file or a signal
        return hooks.on_step_end(run, step, MappingProxyType(record))

    # Step N+1 is queued before step N's metrics are read, and its batch is put on the devices
    # while step N runs: the device never waits for the host between steps. Only a step whose
    # state a hook needs (validation, a checkpoint save, a stop) is waited for before the next.
    in_flight: InFlight | None = None
    try:
        hooks.on_train_start(run)
        for index in range(ctx.step, last_step):
            step = index + 1
            hooks.on_step_start(run, step)
            skip = loader.should_skip(index)  # data.skip_batches: loaded, never trained on
            host_batch, device_batch = batches.get(index, skip=skip)
            if skip:
                stop = report(in_flight) if in_flight is not None else False
                in_flight = None
                trainer.skip(step_index=index)
                logger.info("step %d skipped (data.skip_batches)", index)
                if hooks.on_step_skipped(run, step) or stop:
                    break
                continue
            dispatched = InFlight(
                trainer.dispatch(device_batch, step_index=index),
                segment_ids=host_batch["segment_ids"][:, 0],
            )
            if index + 1 < last_step:
                batches.prefetch(index + 1, skip=loader.should_skip(index + 1))
            stop = report(in_flight) if in_flight is not None else False
            in_flight = dispatched
            wanted = hooks.wants_state(run, step)  # asked every step: the stop-file poll is collective
            if stop or wanted or step == last_step:
                stop = report(in_flight) or stop
                in_flight = None
                if hooks.on_state(run, step) or stop:
                    break
    except BaseException as error:
        hooks.on_exception(run, error)
        raise
    finally:
        hooks.on_train_end(run)
    summary = timer.summary(devices)
    logger.info(describe(summary))
    if is_logger:
        write_summary(summary, run_dir)
    return FitResult(state=trainer.state, context=ctx, losses=losses, run_dir=run_dir)


@dataclasses.dataclass
class InFlight:
    """A dispatched step with what its record needs from the host side."""

    step: PendingStep
    segment_ids: np.ndarray  # [micro_num, length] of the first local row, for the packing stats


class Prefetch:
    """The next step's batch, loaded and put on the devices ahead (while the current step runs)."""

    def __init__(self, loader, put):
        self.loader, self.put = loader, put
        self._ahead: tuple[int, dict, dict | None] | None = None

    def prefetch(self, index: int, *, skip: bool = False) -> None:
        """Load batch `index` now and start its transfer (not for a batch that is skipped)."""
        host = self.loader.get_batch(index)
        self._ahead = (index, host, None if skip else self.put(host))

    def get(self, index: int, *, skip: bool = False) -> tuple[dict, dict | None]:
        """(host batch, device batch) of `index`: the prefetched one, or loaded now (no device
        batch for one that is skipped)."""
        if self._ahead is not None and self._ahead[0] == index:
            _, host, device = self._ahead
            self._ahead = None
            return host, device if device is not None else self.put(host)
        self._ahead = None
        host = self.loader.get_batch(index)
        return host, None if skip else self.put(host)
