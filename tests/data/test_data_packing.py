"""Packing against a token-by-token pure-Python reference, in both pack modes."""

from __future__ import annotations

import numpy as np
import pytest

from internevo_jax.data.packing import ConcatDataset, PackedDataset


class ListSource:
    def __init__(self, samples, type_id=0):
        self.samples = [np.asarray(s, dtype=np.int32) for s in samples]
        self.lengths = np.array([len(s) for s in samples], dtype=np.int64)
        self.type_id = type_id

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def reference_packs(samples, seq_len, packed_length, into_one, type_id=0):
    """InternEvo's packing, one token at a time.

    The shuffled samples form a stream of (token, sample, offset) triples, cut every packed_length.
    A fragment is a run of one sample inside a pack; it is split into seq_len pieces from its start.
    """
    order = np.arange(len(samples))
    np.random.RandomState(1024).shuffle(order)
    stream = [(tok, int(s), off) for s in order for off, tok in enumerate(samples[s])]
    packs = []
    for k in range(len(stream) // packed_length):
        chunk = stream[k * packed_length : (k + 1) * packed_length]
        inputs, labels, positions, segments = [], [], [], []
        seg, run = 0, 0
        for i, (tok, s, off) in enumerate(chunk):
            last_in_pack = i == packed_length - 1
            has_next = off + 1 < len(samples[s])
            nxt = samples[s][off + 1] if has_next and not (into_one and last_in_pack) else -100
            inputs.append(abs(tok))
            labels.append(nxt if nxt > 0 else -100)
            new_fragment = i == 0 or chunk[i - 1][1] != s
            if into_one:
                positions.append(i % seq_len)
                segments.append(i // seq_len + 1)
            else:
                if new_fragment or run == seq_len:
                    seg, run = seg + 1, 0
                positions.append(run)
                segments.append(seg)
                run += 1
        packs.append(
            {
                "input_ids": inputs,
                "labels": labels,
                "positions": positions,
                "segment_ids": segments,
                "type_ids": [type_id] * packed_length,
            }
        )
    return packs


def random_samples(rng, n, max_len, vocab=50, negative=True):
    samples = []
    for _ in range(n):
        length = int(rng.integers(1, max_len + 1))
        s = rng.integers(0, vocab, size=length)
        if negative and rng.random() < 0.4:  # an alpaca-style masked prompt at the start
            cut = int(rng.integers(0, length + 1))
            s[:cut] = -s[:cut]
        samples.append(s.tolist())
    return samples


@pytest.mark.parametrize("into_one", [False, True])
@pytest.mark.parametrize(
    "seed, seq_len, micro_bsz, max_len", [(0, 8, 3, 40), (1, 5, 2, 7), (2, 16, 1, 90), (3, 4, 4, 3)]
)
def test_packing_matches_reference(into_one, seed, seq_len, micro_bsz, max_len):
    rng = np.random.default_rng(seed)
    samples = random_samples(rng, 60, max_len)
    L = seq_len * micro_bsz
    ds = PackedDataset(
        ListSource(samples, type_id=2), seq_len=seq_len, packed_length=L, pack_sample_into_one=into_one
    )
    ref = reference_packs(samples, seq_len, L, into_one, type_id=2)
    assert len(ds) == len(ref) == sum(map(len, samples)) // L
    for k, expected in enumerate(ref):
        got = ds[k]
        for key, want in expected.items():
            assert got[key].dtype == np.int32 and got[key].shape == (L,)
            np.testing.assert_array_equal(got[key], want, err_msg=f"pack {k} {key}")


def test_long_sample_split_from_fragment_start():
    # One 13-token sample, seq_len 4, one pack of 8 then 5 leftover tokens (dropped).
    sample = list(range(1, 14))
    ds = PackedDataset(ListSource([sample]), seq_len=4, packed_length=8)
    assert len(ds) == 1
    p = ds[0]
    np.testing.assert_array_equal(p["segment_ids"], [1, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(p["positions"], [0, 1, 2, 3, 0, 1, 2, 3])
    # The sample continues past the pack: its last token in the pack keeps the true next token.
    np.testing.assert_array_equal(p["labels"], list(range(2, 10)))


def test_cut_sample_label_into_one_is_masked():
    ds = PackedDataset(
        ListSource([list(range(1, 14))]), seq_len=4, packed_length=8, pack_sample_into_one=True
    )
    assert ds[0]["labels"][-1] == -100


def test_concat_dataset_indexes_across_parts():
    a = PackedDataset(ListSource([list(range(1, 20))]), seq_len=4, packed_length=4)
    b = PackedDataset(ListSource([list(range(100, 110))], type_id=1), seq_len=4, packed_length=4)
    cat = ConcatDataset([a, b])
    assert len(cat) == len(a) + len(b) == 4 + 2
    np.testing.assert_array_equal(cat[4]["input_ids"], b[0]["input_ids"])
    assert cat[5]["type_ids"][0] == 1
    with pytest.raises(IndexError):
        cat[6]


def test_pack_reads_only_its_samples():
    class CountingSource(ListSource):
        reads = 0

        def __getitem__(self, i):
            CountingSource.reads += 1
            return super().__getitem__(i)

    src = CountingSource([[1, 2, 3, 4]] * 10_000)
    ds = PackedDataset(src, seq_len=4, packed_length=8)
    ds[1234]
    assert CountingSource.reads <= 3
