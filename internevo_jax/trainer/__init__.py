"""Train state, the compiled train step, the Trainer, the loop with its callbacks and throughput metrics."""

from internevo_jax.trainer.build import build_trainer, create_model
from internevo_jax.trainer.callbacks import Callback, CallbackList, Run
from internevo_jax.trainer.loop import FitResult, fit, resolve_run_dir
from internevo_jax.trainer.loss import IGNORE_INDEX, cross_entropy
from internevo_jax.trainer.state import (
    TrainContext,
    TrainState,
    create_train_state,
    init_params,
    init_train_state,
)
from internevo_jax.trainer.step import make_grads_fn, make_train_step
from internevo_jax.trainer.trainer import Trainer

__all__ = [
    "IGNORE_INDEX",
    "Callback",
    "CallbackList",
    "FitResult",
    "Run",
    "TrainContext",
    "TrainState",
    "Trainer",
    "build_trainer",
    "create_model",
    "create_train_state",
    "cross_entropy",
    "fit",
    "init_params",
    "init_train_state",
    "make_grads_fn",
    "make_train_step",
    "resolve_run_dir",
]
