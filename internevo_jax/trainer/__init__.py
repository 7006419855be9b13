"""Train state, the compiled train step, the loop and throughput metrics."""

from internevo_jax.trainer.loop import FitResult, fit, resolve_run_dir
from internevo_jax.trainer.loss import IGNORE_INDEX, cross_entropy
from internevo_jax.trainer.state import TrainContext, TrainState, create_train_state
from internevo_jax.trainer.step import make_train_step

__all__ = [
    "IGNORE_INDEX",
    "FitResult",
    "TrainContext",
    "TrainState",
    "create_train_state",
    "cross_entropy",
    "fit",
    "make_train_step",
    "resolve_run_dir",
]
