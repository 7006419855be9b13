"""LR and beta2 trajectories against a NumPy transcription of InternEvo's formulas."""

import math

import numpy as np
import pytest

from internevo_jax.optim import Beta2Schedule, LrSchedule


def reference_lr(t, lr, total, init_steps, warmup_ratio, eta_min):
    warmup = int(total * warmup_ratio)
    end = warmup + init_steps
    if t < init_steps:
        return 0.0
    if t < end:
        return (t + 1 - init_steps) / warmup * lr
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (t - end) / (total - end))) / 2


@pytest.mark.parametrize(
    "total,init_steps,warmup_ratio,eta_min",
    [
        (100, 0, 0.1, 1e-5),  # warmup then cosine
        (50, 0, 0.0, 1e-6),  # cosine only
        (60, 7, 0.2, 0.0),  # init_steps > 0
        (40, 0, 1.0, 0.0),  # warmup only
    ],
)
def test_lr_trajectory_matches_formula(total, init_steps, warmup_ratio, eta_min):
    sched = LrSchedule(3e-4, total, init_steps, warmup_ratio, eta_min)
    got = np.array([float(sched(t)) for t in range(total)])
    want = np.array([reference_lr(t, 3e-4, total, init_steps, warmup_ratio, eta_min) for t in range(total)])
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-10)  # fp32 rounding of the cosine near eta_min


def test_lr_reaches_peak_after_warmup_and_eta_min_at_end():
    sched = LrSchedule(1e-3, 100, 0, 0.1, 1e-5)
    assert float(sched(9)) == pytest.approx(1e-3)
    assert float(sched(10)) == pytest.approx(1e-3)
    assert float(sched(0)) == pytest.approx(1e-4)


@pytest.mark.parametrize("c", [0.0, -1.0, 0.5, 0.8])
def test_beta2_trajectory(c):
    sched = Beta2Schedule(0.95, c)
    for t in range(0, 200, 7):
        if c <= 0 or t == 0:
            want = 0.95
        else:
            want = max(0.95, 1 - 1 / t**c)
        assert float(sched(t)) == pytest.approx(want, rel=1e-6)
