"""The training loop: build everything from the config, run the steps, write metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from internevo_jax.config import Config, ConfigError, ParallelSizes, parallel_sizes
from internevo_jax.data import build_train_loader, build_valid_loaders
from internevo_jax.model import attention_backend_name, build_model
from internevo_jax.monitor import JsonlWriter, format_metrics_line, logger
from internevo_jax.optim import Beta2Schedule, DynamicLossScaler, LrSchedule, build_optimizer
from internevo_jax.parallel import build_mesh, local_dp_ranks, logical_axis_rules, put_batch
from internevo_jax.trainer.evaluate import evaluate_sets, make_eval_step
from internevo_jax.trainer.metrics import (
    batch_statistics,
    dense_params,
    internevo_step_flops,
    model_flops_per_token,
    peak_flops_for,
)
from internevo_jax.trainer.state import TrainContext, TrainState, create_train_state
from internevo_jax.trainer.step import LossFn, make_train_step

PROFILE_FIRST_STEP = 5  # skip compilation and warm-up, as InternEvo's profiler schedule does
PROFILE_STEPS = 3


@dataclasses.dataclass
class FitResult:
    """What a finished run leaves behind."""

    state: TrainState
    context: TrainContext
    losses: list[float]
    run_dir: str


def resolve_run_dir(cfg: Config) -> str:
    """The run folder: `run_dir` from the config, else runs/<JOB_NAME>."""
    return cfg.run_dir or os.path.join("runs", cfg.job_name)


def _write_resolved_config(cfg: Config, run_dir: str) -> None:
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, "config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(run_dir, "config.json"))


def _validate(eval_step, state, valid_sets, mesh, dp_size, ctx, writer) -> None:
    # every process runs the forward passes (they are collective); process 0 reports
    metrics = evaluate_sets(eval_step, state.params, valid_sets, mesh, dp_size)
    if writer is not None and metrics:
        record = {"step": ctx.step, **metrics}
        logger.info("validation: %s", format_metrics_line(record))
        writer.write(record)


@dataclasses.dataclass
class Components:
    """Everything a run is built from; `build_components` makes it, `fit` drives it."""

    cfg: Config
    sizes: ParallelSizes
    mesh: Mesh
    rules: tuple
    model: nn.Module
    tx: optax.GradientTransformation
    lr_schedule: LrSchedule
    beta2_schedule: Beta2Schedule
    scaler: DynamicLossScaler
    state: TrainState
    shardings: TrainState
    step_fn: Callable


def build_components(
    cfg: Config,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: LossFn | None = None,
    grad_hook: Callable | None = None,
) -> Components:
    """Mesh, model, optimizer, initial sharded train state and the compiled step for `cfg`."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = parallel_sizes(cfg, len(devices))
    mesh = build_mesh(sizes, devices)
    rules = logical_axis_rules(cfg)
    logger.info(
        "mesh %s on %d %s device(s), %d process(es)",
        dict(mesh.shape),
        len(devices),
        devices[0].platform,
        jax.process_count(),
    )
    try:
        backend = attention_backend_name(cfg, seq_len=cfg.data.packed_length)
        model = build_model(cfg)
    except ValueError as err:
        raise ConfigError(f"{cfg.source_path or '<config>'}: {err}") from err
    logger.info(
        "model %s, attention backend %s, compute dtype %s",
        cfg.model_type,
        backend,
        np.dtype(cfg.model.compute_dtype).name,
    )
    tx, lr_schedule, beta2_schedule = build_optimizer(cfg)
    scaler = DynamicLossScaler.from_config(cfg)
    state, shardings = create_train_state(
        model, tx, scaler, mesh, rules, jax.random.key(cfg.seed), cfg.data.seq_len
    )
    step_fn = make_train_step(
        model,
        tx,
        scaler,
        mesh,
        rules,
        shardings,
        loss_fn=loss_fn,
        label_smoothing=cfg.loss.label_smoothing,
        matmul_precision=cfg.model.matmul_precision,
        grad_hook=grad_hook,
    )
    return Components(
        cfg, sizes, mesh, rules, model, tx, lr_schedule, beta2_schedule, scaler, state, shardings, step_fn
    )


def fit(
    cfg: Config,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: LossFn | None = None,
    grad_hook: Callable | None = None,
    profiling: bool = False,
    max_steps: int | None = None,
    log_every: int = 1,
) -> FitResult:
    """Train `cfg` from scratch until data.total_steps (or `max_steps` steps) and return the result."""
    parts = build_components(cfg, devices=devices, loss_fn=loss_fn, grad_hook=grad_hook)
    sizes, mesh, state = parts.sizes, parts.mesh, parts.state
    devices = list(mesh.devices.flat)
    is_logger = jax.process_index() == 0
    n_dense = dense_params(state.params)
    n_total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    logger.info("parameters: %.2fM total, %.2fM without the input embedding", n_total / 1e6, n_dense / 1e6)

    dp_ranks = local_dp_ranks(mesh)
    loader = build_train_loader(cfg, dp_size=sizes.dp, dp_ranks=dp_ranks, vocab_size=cfg.model.vocab_size)
    valid_sets, eval_step = {}, None
    if cfg.data.valid_every > 0:
        valid_sets = build_valid_loaders(
            cfg, dp_size=sizes.dp, dp_ranks=dp_ranks, vocab_size=cfg.model.vocab_size
        )
        eval_step = make_eval_step(
            parts.model,
            mesh,
            parts.rules,
            parts.shardings.params,
            matmul_precision=cfg.model.matmul_precision,
        )

    run_dir = resolve_run_dir(cfg)
    writer = None
    if is_logger:
        _write_resolved_config(cfg, run_dir)
        writer = JsonlWriter(os.path.join(run_dir, "metrics.jsonl"))
        logger.info("run folder %s", os.path.abspath(run_dir))

    peak = peak_flops_for(devices[0].device_kind)
    flops_per_token = model_flops_per_token(cfg, n_dense)
    world = len(devices)
    ctx = TrainContext()
    losses: list[float] = []
    last_step = cfg.data.total_steps if max_steps is None else min(cfg.data.total_steps, max_steps)
    profile_start = ctx.step + PROFILE_FIRST_STEP if profiling else -1
    try:
        for step in range(ctx.step, last_step):
            if step == profile_start:
                jax.profiler.start_trace(os.path.join(run_dir, "profile"))
            host_batch = loader.get_batch(step)
            micro_num, _, packed_length = host_batch["input_ids"].shape
            batch_tokens = micro_num * packed_length * sizes.dp
            if loader.should_skip(step):  # data.skip_batches: loaded, never trained on
                ctx.step = step + 1
                logger.info("step %d skipped (data.skip_batches)", step + 1)
                continue

            t0 = time.perf_counter()
            state, metrics = parts.step_fn(state, put_batch(host_batch, mesh, sizes.dp), step)
            metrics = jax.device_get(metrics)
            step_time = time.perf_counter() - t0
            if profiling and step == profile_start + PROFILE_STEPS - 1:
                jax.profiler.stop_trace()

            ctx.step = step + 1
            ctx.num_consumed_tokens += batch_tokens  # advances on skipped steps too, as in InternEvo
            if bool(metrics["overflow"]):
                ctx.inf_nan_skip_batches += 1
                logger.warning(
                    "step %d: non-finite gradients, update skipped (loss scale now %g)",
                    step + 1,
                    float(metrics["loss_scale"]),
                )
            loss = float(metrics["loss"])
            losses.append(loss)
            if not is_logger or (step + 1) % log_every:
                if eval_step is not None and ctx.step % cfg.data.valid_every == 0:
                    _validate(eval_step, state, valid_sets, mesh, sizes.dp, ctx, writer)
                continue
            tokens_per_s = batch_tokens / step_time
            record = {
                "tflops": round(
                    internevo_step_flops(cfg, sizes.dp, micro_num) / (step_time * world * 1e12), 4
                ),
                "step": step + 1,
                "loss": loss,
                "tgs (tokens/gpu/second)": round(tokens_per_s / world, 2),
                "lr": float(metrics["lr"]),
                "loss_scale": float(metrics["loss_scale"]),
                "grad_norm": float(metrics["grad_norm"]),
                "micro_num": micro_num,
                "num_consumed_tokens": ctx.num_consumed_tokens,
                "inf_nan_skip_batches": ctx.inf_nan_skip_batches,
                **batch_statistics(host_batch["segment_ids"][:, 0]),
                "adam_beta2": float(metrics["adam_beta2"]),
                "fwd_bwd_time": round(step_time, 4),
                "acc": float(metrics["acc"]),
                "perplexity": float(metrics["perplexity"]),
                "mfu": round(flops_per_token * tokens_per_s / (world * peak), 4) if peak else math.nan,
            }
            logger.info(format_metrics_line(record))
            writer.write(record)
            if eval_step is not None and ctx.step % cfg.data.valid_every == 0:
                _validate(eval_step, state, valid_sets, mesh, sizes.dp, ctx, writer)
    finally:
        if profiling and profile_start < ctx.step < profile_start + PROFILE_STEPS:
            jax.profiler.stop_trace()
        if writer is not None:
            writer.close()
    return FitResult(state=state, context=ctx, losses=losses, run_dir=run_dir)
