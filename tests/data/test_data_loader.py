"""Train and validation loaders built from config stand-ins: batches, resume, skip, ramp, mock data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import data_config, small_corpus, write_folder

from internevo_jax.data import PACK_KEYS, DataError, build_train_loader, build_valid_loaders
from internevo_jax.data.binmeta import BinSource
from internevo_jax.data.packing import PackedDataset


def _corpus(root, seed=0):
    return small_corpus(root, seed)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_shapes_and_contents(tmp_path):
    cfg = data_config(train_folder=str(_corpus(tmp_path)), micro_num=3, seq_len=8, micro_bsz=2)
    loader = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    batch = loader.get_batch(0)
    assert set(batch) == set(PACK_KEYS)
    for v in batch.values():
        assert v.shape == (3, 2, 16) and v.dtype == np.int32
    # Row j of micro-batch m is the pack the schedule assigns to rank j.
    for rank in (0, 1):
        for m, idx in enumerate(loader.schedule.pack_indices(0, rank)):
            _same({k: batch[k][m, rank] for k in PACK_KEYS}, loader.packs[int(idx)])
    # Packs come from per-file packing in walk order: code/c.bin (type 0) first, then en/a, en/b (type 1).
    first = PackedDataset(BinSource(tmp_path / "code" / "c.bin"), seq_len=8, packed_length=16)
    _same(loader.packs[0], first[0])
    assert set(np.unique(batch["type_ids"])) <= {0, 1}


def test_process_rows_are_a_subset_of_ranks(tmp_path):
    cfg = data_config(train_folder=str(_corpus(tmp_path)))
    full = build_train_loader(cfg, dp_size=4, dp_ranks=range(4)).get_batch(3)
    part = build_train_loader(cfg, dp_size=4, dp_ranks=[2, 3]).get_batch(3)
    for k in PACK_KEYS:
        np.testing.assert_array_equal(part[k], full[k][:, 2:4])


def test_restore_continues_exactly(tmp_path):
    cfg = data_config(train_folder=str(_corpus(tmp_path)), total_steps=30, num_worker=0)
    uninterrupted = list(build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1]))
    assert [s for s, _ in uninterrupted] == list(range(30))  # several epochs of this small corpus

    first = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    it = iter(first)
    for _ in range(11):
        next(it)
    state = json.loads(json.dumps(first.state()))  # goes through a JSON checkpoint
    assert state["step"] == 11
    resumed = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    resumed.restore(state)
    rest = list(resumed)
    assert [s for s, _ in rest] == list(range(11, 30))
    for (s1, b1), (s2, b2) in zip(rest, uninterrupted[11:]):
        assert s1 == s2
        _same(b1, b2)


def test_restore_refuses_other_settings(tmp_path):
    cfg = data_config(train_folder=str(_corpus(tmp_path)))
    state = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1]).state()
    other = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    with pytest.raises(DataError, match="dp_size"):
        other.restore(state)
    other.restore(state, strict=False)
    assert other.position == state["step"]


def test_skip_and_rampup_flags(tmp_path):
    cfg = data_config(
        train_folder=str(_corpus(tmp_path)), skip_batches="2-3,6", micro_num=4, rampup_batch_size="1 1 2"
    )
    loader = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    assert [s for s in range(10) if loader.should_skip(s)] == [2, 3, 6]
    assert [loader.micro_num_at(s) for s in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert loader.get_batch(2)["input_ids"].shape[0] == 2  # skipped steps are still loaded


def test_mock_data_when_no_train_folder():
    cfg = data_config(seq_len=32, micro_bsz=2, micro_num=2)
    loader = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    assert loader.summary["samples"] == 1_000_000
    batch = loader.get_batch(0)
    assert batch["input_ids"].shape == (2, 2, 64)
    assert batch["input_ids"].max() < 1000 and (batch["type_ids"] == 0).all()
    _same(batch, build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1]).get_batch(0))


def test_min_length_and_bad_type(tmp_path):
    cfg = data_config(train_folder=str(_corpus(tmp_path)), min_length=1000)
    with pytest.raises(DataError, match="min_length"):
        build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    with pytest.raises(DataError, match="streaming"):
        build_train_loader(data_config(type="streaming"), dp_size=1, dp_ranks=[0])


def test_vocab_checked_lazily_with_file_and_line(tmp_path):
    root = write_folder(tmp_path, {"en/a.bin": [[1, 5, 2]] * 20 + [[1, 999, 2]]})
    loader = build_train_loader(
        data_config(train_folder=str(root), vocab_size=100, micro_num=1, seq_len=2, micro_bsz=1),
        dp_size=1,
        dp_ranks=[0],
    )
    with pytest.raises(DataError, match=r"a\.bin, line 21 .*token id 999"):
        for step in range(loader.schedule._regular_steps):
            loader.get_batch(step)


def test_valid_loaders(tmp_path):
    rng = np.random.default_rng(1)
    samples = [[1, *rng.integers(3, 900, size=int(rng.integers(49, 60))).tolist(), 2] for _ in range(23)]
    short = [[1, 5, 2]] * 5  # below InternEvo's validation min_length of 50: dropped
    write_folder(tmp_path / "valid", {"en/v.bin": samples + short, "code/x/w.bin": samples[:4]})
    cfg = data_config(valid_folder=str(tmp_path / "valid"), seq_len=40, micro_bsz=2, valid_micro_num=2)
    sets = build_valid_loaders(cfg, dp_size=2, dp_ranks=[0, 1])
    assert list(sets) == ["x", "en"]  # sorted walk: code/x, then en
    en = sets["en"]
    # 23 samples, 2 ranks -> 11 per rank; batch = min(2*2, 11) = 4 samples -> 2 batches (3 dropped).
    assert len(en) == 2 and en.micro_num == 2
    batches = list(en)
    b = batches[1]
    assert b["input_ids"].shape == (2, 2, 80)
    # Batch 1, rank 1, micro 1, slot 0 is sample (1*4 + 2) * 2 + 1 = 13, cut to seq_len 40.
    s = np.array(samples[13][:40])
    np.testing.assert_array_equal(b["input_ids"][1, 1, :40], np.abs(s))
    np.testing.assert_array_equal(b["labels"][1, 1, :40], [*s[1:], -100])
    np.testing.assert_array_equal(b["segment_ids"][1, 1], [1] * 40 + [2] * 40)
    # The "x" set has 4 samples: 2 per rank, one batch of 2 (one micro-batch).
    assert len(sets["x"]) == 1 and sets["x"].micro_num == 1


def test_valid_mock_and_errors(tmp_path):
    sets = build_valid_loaders(data_config(seq_len=16), dp_size=2, dp_ranks=[0, 1])
    assert list(sets) == ["val"] and len(sets["val"]) == 500 // 4  # 500 mock samples per rank, 4 per batch
    with pytest.raises(DataError, match="does not exist"):
        build_valid_loaders(data_config(valid_folder=str(tmp_path / "nope")), dp_size=1, dp_ranks=[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .bin files"):
        build_valid_loaders(data_config(valid_folder=str(tmp_path / "empty")), dp_size=1, dp_ranks=[0])


def test_grain_view_of_packs():
    loader = build_train_loader(data_config(), dp_size=1, dp_ranks=[0])
    ds = loader.as_grain_dataset()
    assert len(ds) == loader.num_packs
    _same(ds[5], loader.packs[5])
