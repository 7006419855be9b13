"""InternEvo's dynamic loss scaler (DynamicGradScaler) as a pure state update.

optax has no loss scaling, and jmp's scaler lacks InternEvo's hysteresis, so the state machine is
written out here so that scale trajectories match InternEvo step for step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from internevo_jax.config import Config


class LossScaleState(NamedTuple):
    """Scaler state; it lives in the train state and in checkpoints."""

    scale: jax.Array  # float32
    growth_step: jax.Array  # int32: clean steps since the last growth or overflow
    hysteresis_step: jax.Array  # int32: overflows seen since the last growth


class DynamicLossScaler:
    """Backs off after `hysteresis` overflows, grows after `growth_interval` clean steps."""

    def __init__(
        self,
        initial_scale: float,
        min_scale: float,
        growth_interval: int,
        growth_factor: float,
        backoff_factor: float,
        max_scale: float | None,
        hysteresis: int,
        enabled: bool = True,
    ):
        self.initial_scale = float(initial_scale) if enabled else 1.0
        self.min_scale = float(min_scale) if min_scale else None
        self.max_scale = float(max_scale) if max_scale else None
        self.growth_interval = int(growth_interval)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.hysteresis = int(hysteresis)
        self.enabled = enabled

    @classmethod
    def from_config(cls, cfg: Config) -> DynamicLossScaler:
        """Scaler for the config: active for fp16 and bf16 compute (as in InternEvo), off for fp32."""
        gs = cfg.grad_scaler
        enabled = jnp.dtype(cfg.model.compute_dtype) in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
        return cls(
            gs.fp16.initial_scale,
            gs.fp16.min_scale,
            gs.fp16.growth_interval,
            gs.growth_factor,
            gs.backoff_factor,
            gs.max_scale,
            gs.hysteresis,
            enabled=enabled,
        )

    def init(self) -> LossScaleState:
        return LossScaleState(jnp.float32(self.initial_scale), jnp.int32(0), jnp.int32(0))

    def update(self, state: LossScaleState, overflow: jax.Array) -> LossScaleState:
        """Next scaler state after a step whose gradients did (`overflow`) or did not overflow."""
        if not self.enabled:
            return state
        # overflow branch
        hyst = state.hysteresis_step + 1
        backed = state.scale * self.backoff_factor
        if self.min_scale is not None:
            backed = jnp.maximum(backed, self.min_scale)
        scale_ovf = jnp.where(hyst >= self.hysteresis, backed, state.scale)
        # clean branch
        growth = state.growth_step + 1
        grow_now = growth == self.growth_interval
        grown = state.scale * self.growth_factor
        if self.max_scale is not None:
            grown = jnp.minimum(grown, self.max_scale)
        scale_ok = jnp.where(grow_now, grown, state.scale)
        return LossScaleState(
            scale=jnp.where(overflow, scale_ovf, scale_ok).astype(jnp.float32),
            growth_step=jnp.where(overflow, 0, jnp.where(grow_now, 0, growth)).astype(jnp.int32),
            hysteresis_step=jnp.where(overflow, hyst, jnp.where(grow_now, 0, state.hysteresis_step)).astype(
                jnp.int32
            ),
        )
