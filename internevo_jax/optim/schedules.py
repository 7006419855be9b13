"""InternEvo's learning-rate and beta2 schedules as functions of the update count.

Both are indexed by the number of successful updates, as InternEvo steps its schedulers only
when the optimizer step was not skipped for an overflow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax.numpy as jnp

if TYPE_CHECKING:
    from internevo_jax.config import Config


class LrSchedule:
    """FineTuneCosineAnnealingWarmupLR in closed form.

    lr(t) = 0                                     for t < init_steps
          = (t + 1 - init_steps) / warmup * lr    for init_steps <= t < W
          = eta_min + (lr - eta_min) * (1 + cos(pi * (t - W) / (total - W))) / 2   for t >= W
    with warmup = int(total_steps * warmup_ratio) and W = warmup + init_steps.
    """

    def __init__(
        self,
        lr: float,
        total_steps: int,
        init_steps: int = 0,
        warmup_ratio: float = 0.0,
        eta_min: float = 0.0,
    ):
        self.lr = float(lr)
        self.total_steps = int(total_steps)
        self.init_steps = int(init_steps)
        self.warmup_steps = int(total_steps * warmup_ratio)
        self.warmup_end = self.warmup_steps + self.init_steps
        self.eta_min = float(eta_min)

    @classmethod
    def from_config(cls, cfg: Config) -> LrSchedule:
        s = cfg.lr_scheduler
        return cls(cfg.adam.lr, s.total_steps, s.init_steps, s.warmup_ratio, s.eta_min)

    def __call__(self, count):
        """Learning rate for update number `count` (0-based); works on ints and traced arrays."""
        t = jnp.asarray(count, jnp.float32)
        warm = (t + 1 - self.init_steps) / max(self.warmup_steps, 1) * self.lr
        cos_len = max(self.total_steps - self.warmup_end, 1)
        cos = (
            self.eta_min
            + (self.lr - self.eta_min) * (1 + jnp.cos(math.pi * (t - self.warmup_end) / cos_len)) / 2
        )
        lr = jnp.where(t < self.init_steps, 0.0, jnp.where(t < self.warmup_end, warm, cos))
        return lr.astype(jnp.float32)


class Beta2Schedule:
    """InternEvo's Beta2Scheduler: c <= 0 keeps init_beta2; else max(init_beta2, 1 - 1/t^c).

    The first update runs with init_beta2 (InternEvo only changes beta2 after a step), so update
    number `count` uses t = count.
    """

    def __init__(self, init_beta2: float, c: float = 0.0):
        self.init_beta2 = float(init_beta2)
        self.c = float(c)

    @classmethod
    def from_config(cls, cfg: Config) -> Beta2Schedule:
        return cls(cfg.beta2_scheduler.init_beta2, cfg.beta2_scheduler.c)

    def __call__(self, count):
        """beta2 for update number `count` (0-based)."""
        init = jnp.float32(self.init_beta2)
        if self.c <= 0:
            return init + jnp.zeros_like(jnp.asarray(count, jnp.float32))
        t = jnp.maximum(jnp.asarray(count, jnp.float32), 1.0)
        scheduled = jnp.where(jnp.asarray(count) == 0, init, 1.0 - 1.0 / t**self.c)
        return jnp.maximum(init, scheduled).astype(jnp.float32)
