"""`Trainer`: one compiled update per `step(batch)`, holding the train state and the run counters."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from internevo_jax.config import Config, ParallelSizes
from internevo_jax.optim import Beta2Schedule, DynamicLossScaler, LrSchedule
from internevo_jax.parallel import put_batch
from internevo_jax.trainer.evaluate import evaluate_sets, make_eval_step
from internevo_jax.trainer.state import TrainContext, TrainState
from internevo_jax.trainer.step import LossFn, make_train_step


@dataclasses.dataclass(eq=False)
class PendingStep:
    """A dispatched step whose metrics have not been read yet (see `Trainer.dispatch`)."""

    index: int  # the 0-based batch index
    metrics: dict  # device arrays until `Trainer.finish` reads them
    micro_num: int
    dispatched_at: float
    consumed_tokens: int  # the run's consumed tokens as of this step


def _python_value(key: str, value):
    """A step metric as a Python bool, float, or (per-layer arrays such as moe_load) nested list."""
    if key == "overflow":
        return bool(value)
    return float(value) if getattr(value, "ndim", 0) == 0 else value.tolist()


class Trainer:
    """Runs training steps on a mesh.

    `step(batch)` takes a host batch (int32 numpy arrays [micro_num, local_rows, packed_length] as
    the loaders produce), runs micro_num micro-batches with gradient accumulation, loss scaling and
    skip-on-overflow in one compiled call, updates the host counters and returns the step's metrics
    as Python numbers. `dispatch(batch)` + `finish(pending)` are the same in two halves, so the
    next step can be queued before this one's metrics are read (what `fit` does). `evaluate(valid_sets)` runs validation. `state` and `context` are plain
    attributes: save them, replace them, inspect them.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        model: nn.Module,
        mesh: Mesh,
        rules,
        sizes: ParallelSizes,
        tx: optax.GradientTransformation,
        scaler: DynamicLossScaler,
        state: TrainState,
        shardings: TrainState,
        lr_schedule: LrSchedule | None = None,
        beta2_schedule: Beta2Schedule | None = None,
        loss_fn: LossFn | None = None,
        grad_hook: Callable | None = None,
        type_names: tuple[str, ...] = (),
    ):
        self.cfg, self.model, self.mesh, self.rules, self.sizes = cfg, model, mesh, rules, sizes
        self.tx, self.scaler = tx, scaler
        self.lr_schedule, self.beta2_schedule = lr_schedule, beta2_schedule
        self.state, self.shardings = state, shardings
        self.context = TrainContext()
        self._step_fn = make_train_step(
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
            type_names=tuple(type_names),
            ce_chunk_size=cfg.loss.ce_chunk_size,
            moe_loss_coeff=cfg.loss.moe_loss_coeff,
            schedules=None
            if lr_schedule is None or beta2_schedule is None
            else (lr_schedule, beta2_schedule),
        )
        self._eval_fn = None
        self._last_ready_at = 0.0  # when the last finished step was seen done

    def global_batch_tokens(self, batch: Mapping) -> int:
        """Tokens in the global batch of which `batch` is this process's share."""
        micro_num, _, packed_length = batch["input_ids"].shape
        return micro_num * packed_length * self.sizes.dp

    def put(self, batch: Mapping) -> dict:
        """This process's host batch as global device arrays (the transfer runs in the background)."""
        return put_batch(dict(batch), self.mesh, self.sizes.dp)

    def dispatch(self, batch: Mapping, *, step_index: int | None = None) -> PendingStep:
        """Queue one training step and return at once, without waiting for the device.

        `batch` is a host batch or one already `put` on the devices. The state and the step and
        token counters move on now; the step's metrics (and the overflow count) are read by
        `finish`. Dispatching the next step before finishing this one keeps the device busy.
        """
        index = self.context.step if step_index is None else step_index
        if any(isinstance(v, np.ndarray) for v in batch.values()):
            batch = self.put(batch)
        dispatched_at = time.perf_counter()
        self.state, metrics = self._step_fn(self.state, batch, index)
        self.context.step = index + 1
        # InternEvo counts every loaded batch, skipped-for-overflow ones included
        self.context.num_consumed_tokens += self.global_batch_tokens(batch)
        return PendingStep(
            index=index,
            metrics=metrics,
            micro_num=int(batch["input_ids"].shape[0]),
            dispatched_at=dispatched_at,
            consumed_tokens=self.context.num_consumed_tokens,
        )

    def finish(self, pending: PendingStep) -> dict:
        """Wait for a dispatched step and return its metrics as Python numbers: loss, grad_norm,
        lr, adam_beta2, loss_scale, overflow, acc, perplexity, step_time (seconds) and micro_num.

        step_time is the time the device spent on this step alone: from when it could start (its
        dispatch, or the end of the step before it if that was still running) to its end.
        """
        metrics = jax.device_get(pending.metrics)
        ready_at = time.perf_counter()
        # steps finish in the order they were dispatched
        started = max(pending.dispatched_at, self._last_ready_at)
        self._last_ready_at = ready_at
        out = {k: _python_value(k, v) for k, v in metrics.items()}
        out["step_time"] = ready_at - started
        out["micro_num"] = pending.micro_num
        if out["overflow"]:
            self.context.inf_nan_skip_batches += 1
        return out

    def step(self, batch: Mapping, *, step_index: int | None = None) -> dict:
        """Train on one batch and wait for it: `finish(dispatch(batch))`."""
        return self.finish(self.dispatch(batch, step_index=step_index))

    def skip(self, *, step_index: int | None = None) -> None:
        """Move past a batch that is loaded but not trained on (data.skip_batches)."""
        self.context.step = (self.context.step if step_index is None else step_index) + 1

    def evaluate(self, valid_sets: Mapping) -> dict[str, float]:
        """val/<name>_loss, _acc and _plex for each validation set (token-weighted)."""
        if self._eval_fn is None:
            self._eval_fn = make_eval_step(
                self.model,
                self.mesh,
                self.rules,
                self.shardings.params,
                matmul_precision=self.cfg.model.matmul_precision,
                window_len=self.cfg.data.seq_len,
                ce_chunk_size=self.cfg.loss.ce_chunk_size,
            )
        return evaluate_sets(self._eval_fn, self.state.params, valid_sets, self.mesh, self.sizes.dp)
