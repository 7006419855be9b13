"""One AdamW update (with and without clipping) against NumPy, on random params and grads."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from internevo_jax.optim import clip_by_global_norm_internevo


def numpy_adamw_step(params, grads, lr, b1, b2, eps, wd, clip):
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    ratio = (norm + 1e-6) / clip if clip > 0 else 0.0
    factor = 1.0 / ratio if ratio > 1 else 1.0
    out, moments = {}, {}
    for k, p in params.items():
        g = grads[k].astype(np.float64) * factor
        m = (1 - b1) * g
        v = (1 - b2) * g * g
        m_hat = m / (1 - b1)
        v_hat = v / (1 - b2)
        p64 = p.astype(np.float64)
        out[k] = p64 * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + eps)
        moments[k] = m
    return out, norm, moments


@pytest.mark.parametrize("clip", [0.0, 1.0, 1e3])
def test_adamw_step_matches_numpy(clip):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(7, 5)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    grads = {k: (3 * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()}
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.95, 1e-8, 0.01
    tx = optax.chain(clip_by_global_norm_internevo(clip), optax.adamw(lr, b1, b2, eps, weight_decay=wd))
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    want, norm, moments = numpy_adamw_step(params, grads, lr, b1, b2, eps, wd, clip)
    for k in params:
        np.testing.assert_allclose(np.asarray(new[k]), want[k], rtol=1e-5, atol=1e-6)
    assert float(state[0].grad_norm) == pytest.approx(norm, rel=1e-5)
    # Adam's first step is nearly scale-invariant, so check clipping on the first moment
    mu = state[1][0].mu
    for k in params:
        np.testing.assert_allclose(np.asarray(mu[k]), moments[k], rtol=1e-5, atol=1e-7)
    if clip == 1.0:  # clipping was active
        assert norm > 1.0
        assert not np.allclose(np.asarray(mu["w"]), (1 - b1) * grads["w"])


def test_clip_is_noop_below_threshold():
    grads = {"a": jnp.array([0.3, 0.4])}
    tx = clip_by_global_norm_internevo(10.0)
    out, state = tx.update(grads, tx.init(grads))
    np.testing.assert_array_equal(np.asarray(out["a"]), np.asarray(grads["a"]))
    assert float(state.grad_norm) == pytest.approx(0.5)
