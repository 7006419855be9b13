"""The batch schedule against a step-by-step simulation of InternEvo's StaticBatchSampler."""

from __future__ import annotations

import numpy as np
import pytest

from internevo_jax.data import DataError
from internevo_jax.data.sampler import BatchSchedule, BatchSkipper, parse_rampup, parse_skip_batches


def reference_sampler(num_packs, batch_size, dp, rank, seed, rampup, steps):
    """InternEvo's StaticBatchSampler + load_new_batch, iterated: yields each step's pack indices."""
    if rampup:
        start, incr, every = map(int, rampup.split())
    else:
        start, incr, every = batch_size, batch_size, 1
    rng = np.random.RandomState(seed)
    batch_count = 0

    def epoch_indices():
        indices = np.arange(num_packs)
        rng.shuffle(indices)
        ramp_steps = (batch_size - start) // incr
        if batch_count < ramp_steps * every:
            ramp = sum((i * incr + start) * every for i in range(ramp_steps))
            n = (num_packs - ramp * dp) // (batch_size * dp) * batch_size * dp + ramp * dp
        else:
            n = num_packs // (batch_size * dp) * batch_size * dp
        return indices[:n]

    out = []
    while len(out) < steps:
        mine = epoch_indices()[rank::dp]
        consumed = 0
        while consumed < len(mine) and len(out) < steps:
            size = min((batch_count // every) * incr + start, batch_size)
            batch = mine[consumed : consumed + size]
            consumed += len(batch)
            batch_count += 1
            out.append(batch.tolist())
    return out


@pytest.mark.parametrize(
    "num_packs, micro_num, dp, rampup",
    [
        (37, 3, 2, ""),
        (100, 4, 1, ""),
        (12, 2, 3, ""),
        (200, 8, 2, "2 2 3"),  # ramp ends on micro_num
        (150, 7, 2, "2 2 3"),  # ramp does not end on micro_num: short steps at epoch ends
        (60, 6, 1, "4 1 2"),
        (90, 5, 3, "9 1 1"),  # start above micro_num: no ramp
        (40, 7, 1, "2 2 3"),  # epoch 0 ends with a short step
        (24, 7, 1, "2 2 3"),  # epoch 0 ends while the ramp still runs
        (48, 7, 2, "2 2 3"),
    ],
)
def test_schedule_matches_internevo_sampler(num_packs, micro_num, dp, rampup):
    sched = BatchSchedule(num_packs, micro_num=micro_num, dp_size=dp, seed=7, rampup_batch_size=rampup)
    steps = 80
    for rank in range(dp):
        ref = reference_sampler(num_packs, micro_num, dp, rank, 7, rampup, steps)
        got = [sched.pack_indices(s, rank).tolist() for s in range(steps)]
        assert got == ref, f"rank {rank}"
    assert [sched.micro_num_at(s) for s in range(steps)] == [len(b) for b in ref]


def test_ranks_take_disjoint_strides():
    sched = BatchSchedule(64, micro_num=4, dp_size=4, seed=1)
    packs = np.concatenate([sched.pack_indices(s, r) for s in range(4) for r in range(4)])
    assert sorted(packs.tolist()) == list(range(64))  # one epoch covers every pack once
    perm = sched.permutation(0)
    np.testing.assert_array_equal(
        sched.pack_indices(1, 2), perm[[4 * 4 + 2, 5 * 4 + 2, 6 * 4 + 2, 7 * 4 + 2]]
    )


def test_schedule_is_deterministic_and_epochs_reshuffle():
    a = BatchSchedule(50, micro_num=5, dp_size=2, seed=3)
    b = BatchSchedule(50, micro_num=5, dp_size=2, seed=3)
    c = BatchSchedule(50, micro_num=5, dp_size=2, seed=4)
    # Out-of-order access (e.g. after a restore) gives the same answer as in-order access.
    late = a.pack_indices(23, 1)
    for s in range(25):
        b.pack_indices(s, 0)
    np.testing.assert_array_equal(late, b.pack_indices(23, 1))
    assert a.locate(23).epoch == 4 and a.locate(4).epoch == 0 and a.locate(5).epoch == 1
    assert not np.array_equal(a.permutation(0), a.permutation(1))
    assert not np.array_equal(a.permutation(0), c.permutation(0))


def test_too_few_packs():
    with pytest.raises(DataError, match="only 5 packs"):
        BatchSchedule(5, micro_num=3, dp_size=2, seed=0)


def test_ramp_longer_than_data():
    with pytest.raises(DataError, match="ramp alone"):
        BatchSchedule(20, micro_num=8, dp_size=1, seed=0, rampup_batch_size="1 1 5")


def test_skip_batches_parsing():
    assert parse_skip_batches("") == []
    assert parse_skip_batches(None) == []
    assert parse_skip_batches("100-200,350") == [(100, 200), (350, 350)]
    skip = BatchSkipper("3-5, 9")
    assert [s for s in range(12) if skip(s)] == [3, 4, 5, 9]
    for bad in ("a-b", "5-3", "10,4", "1-5,5"):
        with pytest.raises(DataError, match="skip_batches"):
            parse_skip_batches(bad)


def test_rampup_parsing():
    r = parse_rampup("2 2 3", micro_num=7)
    assert [r.micro_num(s, 7) for s in range(12)] == [2, 2, 2, 4, 4, 4, 6, 6, 6, 7, 7, 7]
    assert parse_rampup("", 4).micro_num(0, 4) == 4
    for bad in ("1 2", "a b c", "0 1 1", "1 0 1"):
        with pytest.raises(DataError, match="rampup_batch_size"):
            parse_rampup(bad, 4)
