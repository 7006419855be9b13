"""The optax chain: InternEvo-style global-norm clipping, then AdamW with scheduled lr and beta2."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import optax

from internevo_jax.optim.schedules import Beta2Schedule, LrSchedule

if TYPE_CHECKING:
    from internevo_jax.config import Config


class ClipState(NamedTuple):
    """Keeps the last pre-clip global norm so the trainer can log it without recomputing."""

    grad_norm: jax.Array


def clip_by_global_norm_internevo(max_norm: float) -> optax.GradientTransformation:
    """Clip to `max_norm` the way InternEvo's hybrid-zero optimizer does.

    optax.clip_by_global_norm rescales by max_norm / norm; InternEvo divides by
    (norm + 1e-6) / max_norm whenever that ratio exceeds 1, so this is written out to match it.
    max_norm <= 0 disables clipping but the norm is still recorded.
    """

    def init_fn(params):
        del params
        return ClipState(grad_norm=jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None):
        del params, state
        norm = optax.tree.norm(updates).astype(jnp.float32)
        if max_norm > 0:
            ratio = (norm + 1e-6) / max_norm
            factor = jnp.where(ratio > 1.0, 1.0 / ratio, 1.0)
            updates = jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates)
        return updates, ClipState(grad_norm=norm)

    return optax.GradientTransformation(init_fn, update_fn)


def _decay_mask(params):
    # Norm weights and biases are the 1-D parameters of every model in the zoo.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def build_optimizer(cfg: Config) -> tuple[optax.GradientTransformation, LrSchedule, Beta2Schedule]:
    """Return (optax transformation, lr schedule, beta2 schedule) for the config."""
    lr_schedule = LrSchedule.from_config(cfg)
    beta2_schedule = Beta2Schedule.from_config(cfg)
    adam = cfg.adam
    mask = _decay_mask if adam.exclude_norm_and_bias_from_decay else None
    # "mask" must be static: inject_hyperparams would otherwise call it as a schedule of the step count
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=lr_schedule,
        b1=adam.adam_beta1,
        b2=beta2_schedule,
        eps=adam.adam_eps,
        weight_decay=adam.weight_decay,
        mask=mask,
    )
    tx = optax.chain(clip_by_global_norm_internevo(cfg.hybrid_zero_optimizer.clip_grad_norm), adamw)
    return tx, lr_schedule, beta2_schedule


def grad_norm_of(opt_state) -> jax.Array:
    """The pre-clip global gradient norm recorded by the last update."""
    return opt_state[0].grad_norm


def hyperparams_of(opt_state) -> dict:
    """The lr and beta2 that the last update used (inject_hyperparams records them)."""
    hp = opt_state[1].hyperparams
    return {"lr": hp["learning_rate"], "adam_beta2": hp["b2"]}


def next_hyperparams(opt_state, lr_schedule: LrSchedule, beta2_schedule: Beta2Schedule) -> dict:
    """The lr and beta2 the next update will use: the schedules at the successful-update count.

    InternEvo's metrics line shows these (its schedulers step right after the optimizer, before
    the line is written), so its first line shows the second update's lr.
    """
    count = opt_state[1].count
    return {"lr": lr_schedule(count), "adam_beta2": beta2_schedule(count)}
