"""Optimizer pieces: schedules, the AdamW chain and the dynamic loss scaler."""

from internevo_jax.optim.adamw import (
    build_optimizer,
    clip_by_global_norm_internevo,
    grad_norm_of,
    hyperparams_of,
    next_hyperparams,
)
from internevo_jax.optim.loss_scaler import DynamicLossScaler, LossScaleState
from internevo_jax.optim.schedules import Beta2Schedule, LrSchedule

__all__ = [
    "Beta2Schedule",
    "DynamicLossScaler",
    "LossScaleState",
    "LrSchedule",
    "build_optimizer",
    "clip_by_global_norm_internevo",
    "grad_norm_of",
    "hyperparams_of",
    "next_hyperparams",
]
