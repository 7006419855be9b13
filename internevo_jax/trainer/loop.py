"""The training loop: build a Trainer from the config, run the steps, write metrics."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from internevo_jax.config import Config
from internevo_jax.data import build_train_loader, build_valid_loaders
from internevo_jax.monitor import JsonlWriter, format_metrics_line, logger
from internevo_jax.names import RUNS_ROOT
from internevo_jax.parallel import local_dp_ranks
from internevo_jax.trainer.build import build_trainer
from internevo_jax.trainer.checkpointing import Checkpointing
from internevo_jax.trainer.metrics import dense_params, model_flops_per_token, peak_flops_for, step_record
from internevo_jax.trainer.state import TrainState
from internevo_jax.trainer.step import LossFn

PROFILE_FIRST_STEP = 5  # skip compilation and warm-up, as InternEvo's profiler schedule does
PROFILE_STEPS = 3


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
) -> FitResult:
    """Train `cfg` from scratch until data.total_steps (or `max_steps` steps) and return the result."""
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
    checkpoints = Checkpointing(cfg, run_dir)
    checkpoints.restore_at_start(trainer, loader)
    writer = None
    if is_logger:
        write_resolved_config(cfg, run_dir)
        writer = JsonlWriter(os.path.join(run_dir, "metrics.jsonl"))
        logger.info("run folder %s", os.path.abspath(run_dir))

    peak = peak_flops_for(devices[0].device_kind)
    flops_per_token = model_flops_per_token(cfg, n_dense)
    ctx = trainer.context
    losses: list[float] = []
    last_step = cfg.data.total_steps if max_steps is None else min(cfg.data.total_steps, max_steps)
    profile_start = ctx.step + PROFILE_FIRST_STEP if profiling else -1
    try:
        for step in range(ctx.step, last_step):
            if step == profile_start:
                jax.profiler.start_trace(os.path.join(run_dir, "profile"))
            batch = loader.get_batch(step)
            if loader.should_skip(step):  # data.skip_batches: loaded, never trained on
                trainer.skip(step_index=step)
                logger.info("step %d skipped (data.skip_batches)", step + 1)
                if checkpoints.after_step(trainer.state, ctx, loader):
                    break
                continue
            metrics = trainer.step(batch, step_index=step)
            if profiling and step == profile_start + PROFILE_STEPS - 1:
                jax.profiler.stop_trace()
            losses.append(metrics["loss"])
            if metrics["overflow"]:
                logger.warning(
                    "step %d: non-finite gradients, update skipped (loss scale now %g)",
                    step + 1,
                    metrics["loss_scale"],
                )
            if writer is not None:
                record = step_record(
                    cfg,
                    step=step + 1,
                    metrics=metrics,
                    context=ctx,
                    segment_ids=batch["segment_ids"][:, 0],
                    dp_size=sizes.dp,
                    world=len(devices),
                    flops_per_token=flops_per_token,
                    peak_flops=peak,
                )
                logger.info(format_metrics_line(record))
                writer.write(record)
            if valid_sets and ctx.step % cfg.data.valid_every == 0:
                # every process runs the forward passes (they are collective); process 0 reports
                val = trainer.evaluate(valid_sets)
                if writer is not None and val:
                    record = {"step": ctx.step, **val}
                    logger.info("validation: %s", format_metrics_line(record))
                    writer.write(record)
            if checkpoints.after_step(trainer.state, ctx, loader):  # schedule, stop file or signal
                break
    finally:
        checkpoints.close()
        if profiling and profile_start < ctx.step < profile_start + PROFILE_STEPS:
            jax.profiler.stop_trace()
        if writer is not None:
            writer.close()
    return FitResult(state=trainer.state, context=ctx, losses=losses, run_dir=run_dir)
