"""Mock data equals InternEvo's RandomDataset, sample by sample."""

from __future__ import annotations

import numpy as np
import pytest

from internevo_jax.data import DataError, MockSource


def reference_random_dataset(num_samples, max_len, vocab_size, fixed_seqlen):
    """InternEvo's RandomDataset, as a plain loop."""
    rng = np.random.RandomState(1999)
    max_num = rng.randint(1, 30, size=(num_samples,))
    rep_num = rng.randint(10, 200, size=(num_samples,))
    data = []
    for n, r in zip(max_num, rep_num):
        d = list(range(n)) * r
        if fixed_seqlen:
            while len(d) < max_len:
                r *= 2
                d = list(range(n)) * r
        r = r % vocab_size
        data.append(([int(n), int(r)] + d)[:max_len])
    return data


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("max_len, vocab", [(64, 1000), (3000, 150), (5, 40)])
def test_mock_matches_internevo(fixed, max_len, vocab):
    ref = reference_random_dataset(200, max_len, vocab, fixed)
    src = MockSource(200, max_len, vocab, fixed_seqlen=fixed)
    np.testing.assert_array_equal(src.lengths, [len(d) for d in ref])
    for i in (0, 1, 7, 99, 199):
        got = src[i]
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref[i])
        assert got.max() < vocab


def test_mock_needs_vocab_for_its_ids():
    with pytest.raises(DataError, match="vocab_size"):
        MockSource(10, 16, 20)
