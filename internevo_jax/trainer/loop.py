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
from internevo_jax.monitor import JsonlWriter, LineWriter, logger
from internevo_jax.names import RUNS_ROOT
from internevo_jax.parallel import local_dp_ranks
from internevo_jax.trainer.build import build_trainer
from internevo_jax.trainer.builtin_callbacks import Evaluation, Profiler, WriteMetrics
from internevo_jax.trainer.callbacks import Callback, CallbackList, Run
from internevo_jax.trainer.checkpointing import Checkpointing
from internevo_jax.trainer.metrics import dense_params, model_flops_per_token, peak_flops_for, step_record
from internevo_jax.trainer.state import TrainState
from internevo_jax.trainer.step import LossFn


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

    Around each step run, in this order: the profiler (`profiling`), the metric writers (the stdout
    line and <run_dir>/metrics.jsonl, on process 0), `callbacks` in the order given, validation every
    data.valid_every steps, checkpointing. The checkpoint is restored before any hook runs.
    """
    user_callbacks = CallbackList(callbacks)  # checked before anything is compiled
    trainer = build_trainer(cfg, devices=devices, loss_fn=loss_fn, grad_hook=grad_hook)
    sizes, mesh = trainer.sizes, trainer.mesh
    devices = list(mesh.devices.flat)
    is_logger = jax.process_index() == 0
    n_dense = dense_params(trainer.state.params)
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
    writers = []
    if is_logger:
        write_resolved_config(cfg, run_dir)
        writers = [LineWriter(), JsonlWriter(os.path.join(run_dir, "metrics.jsonl"))]
        logger.info("run folder %s", os.path.abspath(run_dir))
    # validation records go to the writers and the user's callbacks
    reporters = CallbackList([WriteMetrics(writers), user_callbacks])
    hooks = CallbackList(
        [
            *([Profiler(os.path.join(run_dir, "profile"))] if profiling else []),
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
    last_step = cfg.data.total_steps if max_steps is None else min(cfg.data.total_steps, max_steps)
    try:
        hooks.on_train_start(run)
        for index in range(ctx.step, last_step):
            step = index + 1
            hooks.on_step_start(run, step)
            batch = loader.get_batch(index)
            if loader.should_skip(index):  # data.skip_batches: loaded, never trained on
                trainer.skip(step_index=index)
                logger.info("step %d skipped (data.skip_batches)", step)
                if hooks.on_step_skipped(run, step):
                    break
                continue
            metrics = trainer.step(batch, step_index=index)
            losses.append(metrics["loss"])
            if metrics["overflow"]:
                logger.warning(
                    "step %d: non-finite gradients, update skipped (loss scale now %g)",
                    step,
                    metrics["loss_scale"],
                )
            record = step_record(
                cfg,
                step=step,
                metrics=metrics,
                context=ctx,
                segment_ids=batch["segment_ids"][:, 0],
                dp_size=sizes.dp,
                world=len(devices),
                flops_per_token=flops_per_token,
                peak_flops=peak,
            )
            record.update(hooks.add_metrics(run, step, record))
            # a stop comes from a callback, the stop file or a signal
            if hooks.on_step_end(run, step, MappingProxyType(record)):
                break
    finally:
        hooks.on_train_end(run)
    return FitResult(state=trainer.state, context=ctx, losses=losses, run_dir=run_dir)
