"""InternEvo's data options: min_length_dict, use_packed_dataset=False, type="hf", checked against simulations."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_helpers import data_config, write_folder

from internevo_jax.config import ConfigError
from internevo_jax.data import DataError, StreamingTrainLoader, build_train_loader, type_names
from internevo_jax.data.binmeta import BinSource
from internevo_jax.data.packing import PackedDataset

IGNORE = -100
SEED = 1024  # InternEvo's DEFAULT_SEED for the sample shuffle


# -- an independent simulation of InternEvo's code path, in plain python ------------------------
def sim_walk(folder: str, min_length: int, min_length_dict: dict | None) -> list[tuple[str, list]]:
    """(path, kept samples) per .bin file, as get_packed_dataset_without_short_length reads them."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for fn in sorted(files):
            if not fn.endswith(".bin"):
                continue
            fp = os.path.join(root, fn)
            limit, caught = min_length, []
            for k, v in (min_length_dict or {}).items():
                if k in fp:
                    limit = v
                    caught.append(k)
            assert len(caught) < 2
            with open(fp) as f:
                samples = [json.loads(line)["tokens"] for line in f]
            kept = [s for s in samples if len(s) >= limit]
            if kept:
                out.append((fp, kept))
    return out


def sim_shuffled(samples: list) -> list:
    order = np.arange(len(samples))
    np.random.RandomState(SEED).shuffle(order)
    return [samples[i] for i in order]


def sim_build_pack(samples: list, index: int, packed_length: int) -> dict:
    """Inputs and labels of PackedDatasetWithCut.build_pack, then the collate step.

    Labels are the next token within a sample (so a sample cut at the pack end keeps its true next
    token) and -100 after a sample's last token; collate keeps abs ids and labels > 0.
    """
    stream, labels = [], []
    for s in sim_shuffled(samples):
        stream += s
        labels += s[1:] + [IGNORE]
    a, b = index * packed_length, (index + 1) * packed_length
    return {
        "input_ids": [abs(t) for t in stream[a:b]],
        "labels": [t if t > 0 else IGNORE for t in labels[a:b]],
    }


def sim_unpack(samples: list, index: int, seq_len: int, micro_bsz: int, type_id: int) -> dict:
    """PackedDatasetWithCut.build_unpack + unpack_data: row j is sample index*micro_bsz + j, padded."""
    shuffled = sim_shuffled(samples)
    rows = {k: [] for k in ("input_ids", "labels", "segment_ids", "type_ids", "positions")}
    for j in range(micro_bsz):
        pos = index * micro_bsz + j
        chunk = shuffled[pos][:seq_len] if pos < len(shuffled) else []
        labels = chunk[1:] + [IGNORE] if chunk else []
        pad = seq_len - len(chunk)
        rows["input_ids"] += [abs(t) for t in chunk] + [0] * pad
        rows["labels"] += [t if t > 0 else IGNORE for t in labels] + [IGNORE] * pad
        rows["segment_ids"] += [j + 1] * len(chunk) + [0] * pad
        rows["type_ids"] += [type_id] * len(chunk) + [0] * pad
        rows["positions"] += list(range(seq_len))
    return rows


def _samples(rng, n, lo, hi, *, negative=False):
    out = []
    for _ in range(n):
        body = rng.integers(3, 500, size=int(rng.integers(lo, hi))).tolist()
        if negative:  # a prompt: negated ids, as the alpaca tool writes them
            k = len(body) // 2
            body = [-t for t in body[:k]] + body[k:]
        out.append([1, *body, 2])
    return out


# -- min_length_dict ----------------------------------------------------------------------------
@pytest.fixture
def three_files(tmp_path):
    rng = np.random.default_rng(3)
    return write_folder(
        tmp_path / "train",
        {
            "en/arxiv.bin": _samples(rng, 30, 2, 40),
            "en/wiki.bin": _samples(rng, 25, 2, 40),
            "code/py.bin": _samples(rng, 20, 2, 40),
        },
    )


def test_min_length_dict_filters_per_file_like_internevo(three_files):
    folder = str(three_files)
    mld = {"arxiv": 20, "/code/": 30}
    cfg = data_config(train_folder=folder, min_length=8, min_length_dict=mld)
    loader = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    expected = sim_walk(folder, 8, mld)
    sources = [d.source for d in loader.packs.datasets]
    assert [s.path for s in sources] == [fp for fp, _ in expected]
    for src, (fp, kept) in zip(sources, expected):
        assert [src[i].tolist() for i in range(len(src))] == kept, fp
    limits = {"arxiv.bin": 20, "wiki.bin": 8, "py.bin": 30}
    for src in sources:
        assert src.lengths.min() >= limits[os.path.basename(src.path)]
    # Packs: every file packed on its own, in walk order.
    L = cfg.data.seq_len * cfg.data.micro_bsz
    sim = []
    for _, kept in expected:
        n = sum(len(s) for s in kept) // L
        sim += [sim_build_pack(kept, k, L) for k in range(n)]
    assert len(loader.packs) == len(sim)
    for k, ref in enumerate(sim):
        pack = loader.packs[k]
        for key in ref:
            assert pack[key].tolist() == ref[key], (k, key)
    total = sum(src.num_unfiltered for src in sources)
    assert loader.summary["dropped_by_min_length"] == total - sum(len(k) for _, k in expected)


def test_min_length_dict_zero_and_emptied_file(three_files):
    folder = str(three_files)
    # "wiki" drops every sample of wiki.bin: the file is skipped, as InternEvo does.
    mld = {"wiki": 1000, "py.bin": 0}
    loader = build_train_loader(
        data_config(train_folder=folder, min_length=10, min_length_dict=mld), dp_size=1, dp_ranks=[0]
    )
    names = [os.path.basename(d.source.path) for d in loader.packs.datasets]
    assert names == [os.path.basename(fp) for fp, _ in sim_walk(folder, 10, mld)] == ["py.bin", "arxiv.bin"]
    py = loader.packs.datasets[0].source
    assert py.num_unfiltered == len(py)  # min_length 0 for it: nothing dropped


def test_min_length_dict_two_matching_keys(three_files):
    cfg = data_config(train_folder=str(three_files), min_length_dict={"/en/": 5, "arxiv": 9})
    with pytest.raises(
        DataError, match=r"arxiv\.bin` matched the following keys.*\['/en/', 'arxiv'\].*distinct"
    ):
        build_train_loader(cfg, dp_size=1, dp_ranks=[0])


def test_min_length_dict_everything_dropped(three_files):
    cfg = data_config(train_folder=str(three_files), min_length_dict={"/": 10_000})
    with pytest.raises(DataError, match="min_length_dict"):
        build_train_loader(cfg, dp_size=1, dp_ranks=[0])


@pytest.mark.parametrize("bad", [{"a": -1}, {"a": "50"}, {"a": True}, {3: 50}, {"a": 2.5}])
def test_min_length_dict_types(bad):
    with pytest.raises(ConfigError, match=r"data\.min_length_dict"):
        data_config(min_length_dict=bad)


# -- use_packed_dataset=False -------------------------------------------------------------------
class ListSource:
    def __init__(self, samples, type_id=0):
        self.samples = [np.asarray(s, dtype=np.int32) for s in samples]
        self.lengths = np.array([len(s) for s in samples], dtype=np.int64)
        self.type_id = type_id

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_unpacked_packs_follow_build_unpack():
    seq_len, micro_bsz = 8, 2
    # Long samples: more packs (tokens // packed_length) than samples / micro_bsz, so the last packs
    # point past the samples and come out empty. Sample 1 is longer than seq_len; sample 3 has a prompt.
    samples = [
        [1, 5, 6, 7, 2],
        [1, *range(10, 40), 2],
        [1, 8, 9, 2],
        [1, -50, -51, 52, 53, 2],
        [1, *range(60, 80), 2],
    ]
    src = ListSource(samples, type_id=3)
    ds = PackedDataset(src, seq_len=seq_len, packed_length=seq_len * micro_bsz, unpacked=True)
    assert len(ds) == sum(map(len, samples)) // 16 == 4  # unchanged by unpacking
    assert len(samples) / micro_bsz < len(ds)
    for k in range(len(ds)):
        got, ref = ds[k], sim_unpack(samples, k, seq_len, micro_bsz, type_id=3)
        for key in ref:
            assert got[key].tolist() == ref[key], (k, key)
        assert ds.sample_indices(k) == [int(i) for i in ds.order[k * 2 : k * 2 + 2]]
    assert (ds[3]["segment_ids"] == 0).all() and (ds[3]["labels"] == IGNORE).all()
    # The prompt sample: abs ids in, no label predicting a negative id.
    row = next(r for k in range(3) for r in np.split(ds[k]["input_ids"], 2) if 50 in r)
    assert row[:6].tolist() == [1, 50, 51, 52, 53, 2]
    # A cut sample: its last kept token gets -100 although the sample goes on.
    long_row = next(
        (ds[k]["labels"][j * 8 : (j + 1) * 8])
        for k in range(3)
        for j in range(2)
        if ds[k]["input_ids"][j * 8 + 1] == 10
    )
    assert long_row.tolist() == [10, 11, 12, 13, 14, 15, 16, IGNORE]


def test_unpacked_changes_nothing_with_pack_sample_into_one():
    src = ListSource([[1, *range(3, 30), 2], [1, 7, 8, 2], [1, *range(40, 60), 2]])
    kw = dict(seq_len=8, packed_length=16, pack_sample_into_one=True)
    a, b = PackedDataset(src, **kw), PackedDataset(src, unpacked=True, **kw)
    for k in range(len(a)):
        for key, value in a[k].items():
            np.testing.assert_array_equal(b[k][key], value)


def test_use_packed_dataset_false_end_to_end(tmp_path):
    rng = np.random.default_rng(5)
    folder = write_folder(tmp_path / "train", {"en/a.bin": _samples(rng, 40, 2, 30, negative=True)})
    cfg = data_config(train_folder=str(folder), use_packed_dataset=False)
    assert "data.use_packed_dataset" not in cfg.no_effect_keys
    loader = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    packed = build_train_loader(data_config(train_folder=str(folder)), dp_size=2, dp_ranks=[0, 1])
    assert len(loader.packs) == len(packed.packs) and loader.summary["unpacked"]
    kept = [BinSource(folder / "en" / "a.bin")[i].tolist() for i in range(40)]
    S, B = cfg.data.seq_len, cfg.data.micro_bsz
    for step in range(3):
        batch = loader.get_batch(step)
        assert batch["input_ids"].shape == (cfg.data.micro_num, 2, S * B)
        for r in range(2):
            for m, idx in enumerate(loader.schedule.pack_indices(step, r)):
                ref = sim_unpack(kept, int(idx), S, B, type_id=0)
                for key in ref:
                    assert batch[key][m, r].tolist() == ref[key], (step, r, m, key)


# -- type="hf" ----------------------------------------------------------------------------------
TEXTS = [f"Story {i}: " + "once upon a time there was a fox. " * (i % 5 + 1) for i in range(23)]


def _hf_cfg(train_folder, tokenizer, kind, **kw):
    return data_config(
        vocab_size=103168,
        type=kind,
        train_folder=str(train_folder),
        tokenizer_path=str(tokenizer),
        seq_len=16,
        micro_bsz=2,
        micro_num=2,
        **kw,
    )


def test_hf_type_reads_a_local_datasets_folder(tmp_path, internlm_tokenizer):
    import datasets  # a test dependency (pyproject.toml)

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(
        str(tmp_path / "ds")
    )
    # A Hugging Face model folder as tokenizer_path: its tokenizer.model is used.
    model_dir = tmp_path / "internlm-7b"
    model_dir.mkdir()
    (model_dir / "tokenizer.model").write_bytes(internlm_tokenizer.read_bytes())
    (model_dir / "config.json").write_text("{}")
    hf = build_train_loader(_hf_cfg(tmp_path / "ds", model_dir, "hf"), dp_size=2, dp_ranks=[0, 1])
    streaming = build_train_loader(
        _hf_cfg(tmp_path / "ds", internlm_tokenizer, "streaming"), dp_size=2, dp_ranks=[0, 1]
    )
    assert isinstance(hf, StreamingTrainLoader)
    for step in range(6):
        a, b = hf.get_batch(step), streaming.get_batch(step)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert type_names(_hf_cfg(tmp_path / "ds", model_dir, "hf")) == ["en"]


def test_hf_type_errors(tmp_path, internlm_tokenizer):
    with pytest.raises(DataError, match=r"roneneldan/TinyStories.*does not exist.*local.*save_to_disk"):
        build_train_loader(
            _hf_cfg("roneneldan/TinyStories", internlm_tokenizer, "hf"), dp_size=1, dp_ranks=[0]
        )
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    empty = tmp_path / "tok"
    empty.mkdir()
    (empty / "tokenizer.json").write_text("{}")
    with pytest.raises(DataError, match=r"folder without tokenizer\.model.*tokenizer\.json alone"):
        build_train_loader(_hf_cfg(src, empty, "hf"), dp_size=1, dp_ranks=[0])
    for kind in ("hf", "streaming"):
        with pytest.raises(DataError, match=r"use_packed_dataset=False is not supported"):
            build_train_loader(
                _hf_cfg(src, internlm_tokenizer, kind, use_packed_dataset=False), dp_size=1, dp_ranks=[0]
            )
