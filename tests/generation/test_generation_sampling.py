"""The token-choice rules against NumPy references: top-k, top-p, repetition and length penalties,
greedy choice after the penalties, and the distribution sampling draws from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.generation import Sampling, choose, top_k_filter, top_p_filter
from internevo_jax.generation.sampling import penalize_length, penalize_repeats


def logits_rows(seed: int = 0, rows: int = 4, vocab: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2.0, (rows, vocab)).astype(np.float32)


def np_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    kth = np.sort(logits, axis=-1)[:, ::-1][:, min(k, logits.shape[-1]) - 1 : min(k, logits.shape[-1])]
    return np.where(logits < kth, -np.inf, logits)


def np_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    out = np.full_like(logits, -np.inf)
    for r, row in enumerate(logits):
        order = np.argsort(-row, kind="stable")
        probs = np.exp(row[order] - row[order].max())
        probs /= probs.sum()
        before = np.cumsum(probs) - probs  # mass of the more likely tokens
        keep = order[before < p]
        out[r, keep] = row[keep]
    return out


@pytest.mark.parametrize("k", [1, 3, 40, 100])
def test_top_k_matches_numpy(k):
    x = logits_rows()
    np.testing.assert_array_equal(np.asarray(top_k_filter(jnp.asarray(x), k)), np_top_k(x, k))


@pytest.mark.parametrize("p", [1e-6, 0.3, 0.75, 0.999])
def test_top_p_matches_numpy(p):
    x = logits_rows(1)
    np.testing.assert_array_equal(np.asarray(top_p_filter(jnp.asarray(x), p)), np_top_p(x, p))


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    x = np.log(np.asarray([[0.5, 0.3, 0.15, 0.05]], np.float32))
    kept = np.isfinite(np.asarray(top_p_filter(jnp.asarray(x), 0.7)))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.7


def test_repetition_penalty_matches_hf_semantics():
    """Seen tokens: positive logits divided by the penalty, negative ones multiplied by it."""
    x = logits_rows(2)
    seen = np.random.default_rng(3).random(x.shape) < 0.3
    want = np.where(seen, np.where(x > 0, x / 1.3, x * 1.3), x)
    got = penalize_repeats(jnp.asarray(x), jnp.asarray(seen), 1.3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_length_penalty_matches_internevo():
    """Every logit but the eos ones divided by cur_len ** penalty (InternEvo outside beam search)."""
    x = logits_rows(4)
    cur = np.asarray([3, 5, 8, 13])
    eos = np.zeros(x.shape[-1], bool)
    eos[[2, 7]] = True
    want = np.where(eos[None], x, x / (cur[:, None].astype(np.float32) ** 1.5))
    got = penalize_length(jnp.asarray(x), jnp.asarray(eos), jnp.asarray(cur), 1.5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_greedy_choice_applies_the_penalties_first():
    x = logits_rows(5)
    seen = np.zeros(x.shape, bool)
    seen[np.arange(4), x.argmax(-1)] = True  # the current favourite of every row was seen
    cur, eos = np.asarray([4, 4, 4, 4]), np.asarray([3])
    s = Sampling(repetition_penalty=5.0, length_penalty=0.5)
    got = choose(
        jnp.asarray(x), jax.random.key(0), s, seen=jnp.asarray(seen), cur_len=jnp.asarray(cur), eos_ids=eos
    )
    ref = np.where(seen, np.where(x > 0, x / 5.0, x * 5.0), x)
    mask = np.zeros(x.shape[-1], bool)
    mask[3] = True
    ref = np.where(mask[None], ref, ref / 4.0**0.5)
    assert np.asarray(got).tolist() == ref.argmax(-1).tolist()
    # without eos ids InternEvo applies no length penalty
    plain = choose(jnp.asarray(x), jax.random.key(0), Sampling(length_penalty=0.5), cur_len=jnp.asarray(cur))
    assert np.asarray(plain).tolist() == x.argmax(-1).tolist()


def test_sampling_draws_from_the_filtered_tempered_distribution():
    x = logits_rows(6, rows=1, vocab=12)
    s = Sampling(do_sample=True, temperature=0.7, top_k=5, top_p=0.9)
    # 3000 rows of the same logits: one independent draw each
    draws = np.asarray(choose(jnp.asarray(np.repeat(x, 3000, axis=0)), jax.random.key(0), s))
    ref = np_top_p(np_top_k(x / 0.7, 5), 0.9)[0]
    probs = np.exp(ref - ref[np.isfinite(ref)].max())
    probs /= probs.sum()
    freq = np.bincount(draws, minlength=12) / len(draws)
    assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(probs))  # nothing outside the filters
    assert np.abs(freq - probs).max() < 0.03
