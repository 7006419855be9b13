"""The dynamic loss scaler's state machine against a hand-computed sequence."""

import jax.numpy as jnp
import pytest

from internevo_jax.optim import DynamicLossScaler


def run(scaler, overflows):
    state = scaler.init()
    scales = []
    for ovf in overflows:
        state = scaler.update(state, jnp.bool_(ovf))
        scales.append(float(state.scale))
    return scales, state


def test_hysteresis_growth_and_clamping():
    scaler = DynamicLossScaler(
        initial_scale=16.0,
        min_scale=2.0,
        growth_interval=3,
        growth_factor=2.0,
        backoff_factor=0.5,
        max_scale=64.0,
        hysteresis=2,
    )
    # overflow #1 is absorbed by hysteresis; #2 backs off; hysteresis_step is not reset by a backoff,
    # so #3 backs off at once; 3 clean steps grow and reset hysteresis; growth is capped at max_scale.
    overflows = [1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    want = [16, 8, 4, 4, 4, 8, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 32, 16, 8, 4, 2]
    scales, state = run(scaler, overflows)
    assert scales == [float(w) for w in want]
    # min_scale clamps further backoffs
    scales, _ = run(scaler, [1] * 10)
    assert min(scales) == 2.0


def test_disabled_scaler_is_constant_one():
    scaler = DynamicLossScaler(2.0**16, 1, 1000, 2, 0.5, 2.0**24, 2, enabled=False)
    scales, _ = run(scaler, [1, 1, 0, 1])
    assert scales == [1.0] * 4


@pytest.mark.parametrize("interval", [1, 2])
def test_growth_interval(interval):
    scaler = DynamicLossScaler(1.0, 1.0, interval, 2.0, 0.5, None, 1)
    scales, _ = run(scaler, [0] * 4)
    assert scales == [2.0 ** ((i + 1) // interval) for i in range(4)]
