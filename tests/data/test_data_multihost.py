"""Several processes: each reads only its data-parallel ranks' packs, and resumes from the shared step."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import data_config, small_corpus

from internevo_jax.data import DataError, build_train_loader


class CountingSource:
    """Wraps a sample source and records which samples are read."""

    def __init__(self, source):
        self.source, self.reads = source, set()
        self.lengths, self.type_id = source.lengths, source.type_id

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads.add(int(i))
        return self.source[i]


def _cfg(tmp_path, **kw):
    return data_config(train_folder=str(small_corpus(tmp_path)), seq_len=8, micro_bsz=2, micro_num=2, **kw)


def test_disjoint_processes_make_up_the_full_batch(tmp_path):
    cfg = _cfg(tmp_path, rampup_batch_size="1 1 2")
    full = build_train_loader(cfg, dp_size=4, dp_ranks=range(4))
    hosts = [build_train_loader(cfg, dp_size=4, dp_ranks=r) for r in ([0, 2], [1, 3])]
    for step in range(12):  # through the ramp and into the second epoch
        want = full.get_batch(step)
        got = [h.get_batch(step) for h in hosts]
        for k in want:
            np.testing.assert_array_equal(got[0][k], want[k][:, [0, 2]])
            np.testing.assert_array_equal(got[1][k], want[k][:, [1, 3]])


def test_a_process_reads_only_its_own_packs(tmp_path):
    cfg = _cfg(tmp_path)
    for ranks in ([0], [1, 2]):
        loader = build_train_loader(cfg, dp_size=3, dp_ranks=ranks)
        packed = loader.packs.datasets
        for p in packed:
            p.source = CountingSource(p.source)
        allowed = [set() for _ in packed]
        for step in range(6):
            loader.get_batch(step)
            for r in ranks:
                for idx in loader.schedule.pack_indices(step, r):
                    d = int(np.searchsorted(loader.packs.starts, idx, side="right")) - 1
                    allowed[d].update(packed[d].sample_indices(int(idx - loader.packs.starts[d])))
        reads = [p.source.reads for p in packed]
        assert any(reads) and sum(map(len, allowed)) < sum(len(p.source) for p in packed) / 2
        for d, p in enumerate(packed):
            assert p.source.reads <= allowed[d], f"file {d} read samples of other ranks' packs"
            # and nothing of packs no local rank reads
            others = set(range(len(p.source))) - allowed[d]
            assert not (p.source.reads & others)


def test_resume_on_another_host_count(tmp_path):
    """The state is the step: the same dp size split over other hosts resumes at the same batches."""
    cfg = _cfg(tmp_path, total_steps=10)
    one_host = build_train_loader(cfg, dp_size=4, dp_ranks=range(4))
    it = iter(one_host)
    for _ in range(4):
        next(it)
    state = one_host.state()
    expected = [b for _, b in it]
    for ranks in ([0, 1], [2, 3]):
        host = build_train_loader(cfg, dp_size=4, dp_ranks=ranks)
        host.restore(state)
        for (step, batch), want in zip(host, expected):
            for k in want:
                np.testing.assert_array_equal(batch[k], want[k][:, ranks], err_msg=f"{step} {k}")


def test_resume_with_another_dp_size(tmp_path):
    """A dp change would make the step name other packs: refused, unless asked to continue anyway."""
    cfg = _cfg(tmp_path, total_steps=10)
    state = build_train_loader(cfg, dp_size=4, dp_ranks=range(4)).state() | {"step": 5}
    two = build_train_loader(cfg, dp_size=2, dp_ranks=range(2))
    with pytest.raises(DataError, match="dp_size: saved 4, now 2"):
        two.restore(state)
    two.restore(state, strict=False)
    step, batch = next(iter(two))
    fresh = build_train_loader(cfg, dp_size=2, dp_ranks=range(2)).get_batch(5)
    assert step == 5
    for k in batch:
        np.testing.assert_array_equal(batch[k], fresh[k])
