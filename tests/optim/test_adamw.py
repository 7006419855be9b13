"""One AdamW update (with and without clipping) against NumPy, on random params and grads."""

import jax
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


def _cfg(**adam):
    from internevo_jax.config import config_from_dict

    return config_from_dict(
        {
            "adam": dict(lr=0.1, weight_decay=0.5, **adam),
            "lr_scheduler": dict(warmup_ratio=0.0),
            "hybrid_zero_optimizer": dict(clip_grad_norm=0.0),
        },
        log=lambda *_: None,
    )


@pytest.mark.parametrize("exclude", [False, True])
def test_weight_decay_covers_every_param_unless_norms_and_biases_are_excluded(exclude):
    from internevo_jax.optim import build_optimizer

    tx, _, _ = build_optimizer(_cfg(exclude_norm_and_bias_from_decay=exclude))
    params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,)), "norm": {"scale": jnp.ones((4,))}}
    zero = jax.tree.map(jnp.zeros_like, params)  # pure decay: the Adam term is 0 for zero grads
    updates, _ = tx.update(zero, tx.init(params), params)
    lr_t = 0.1 * 1.0  # warmup_ratio 0 -> the first update runs at the full lr
    np.testing.assert_allclose(np.asarray(updates["kernel"]), -lr_t * 0.5, rtol=1e-6)
    for leaf in (updates["bias"], updates["norm"]["scale"]):
        np.testing.assert_allclose(np.asarray(leaf), 0.0 if exclude else -lr_t * 0.5, rtol=1e-6, atol=0)
