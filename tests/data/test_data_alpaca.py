"""Alpaca SFT data: the library side, and its prompts masked from the loss through the train loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import data_config

from internevo_jax.data import DataError, build_train_loader, build_valid_loaders
from internevo_jax.data.binmeta import BinSource
from internevo_jax.preprocess.alpaca import read_alpaca_records, tokenize_alpaca, valid_indices


def _write_jsonl(path, n):
    rows = [
        {"instruction": f"Translate sentence {i}.", "output": f"Sentence {i} translated, with care. " * 4}
        for i in range(n)
    ]
    rows[min(4, n - 1)]["input"] = "with some input"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def test_split_is_internevos():
    np.random.seed(0)
    expected = set(np.random.choice(range(1000), 100).tolist())
    assert valid_indices(1000, 0.1) == expected and len(expected) < 100  # drawn with replacement
    assert valid_indices(5, 0.1) == set()
    with pytest.raises(DataError, match="split_ratio"):
        valid_indices(10, 1.0)


def test_prompts_are_masked_end_to_end(tmp_path, internlm_tokenizer):
    src = tmp_path / "sft.jsonl"
    _write_jsonl(src, 40)
    stats = tokenize_alpaca(src, tmp_path / "out", internlm_tokenizer, split_ratio=0.1)
    assert stats.train_samples + stats.valid_samples == 40 and stats.valid_samples > 0

    cfg = data_config(
        vocab_size=103168, train_folder=str(tmp_path / "out" / "train"), seq_len=32, micro_bsz=2, micro_num=1
    )
    loader = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    # The packed stream of the one file, and its labels by InternEvo's rules, computed here directly.
    packed = loader.packs.datasets[0]
    source = BinSource(tmp_path / "out" / "train" / "en" / "dataset.bin")
    samples = [source[int(i)].astype(np.int64) for i in packed.order]
    stream = np.concatenate(samples)
    starts = np.zeros(len(stream), bool)
    starts[np.cumsum([len(s) for s in samples])[:-1]] = True
    nxt = np.append(stream[1:], -100)
    labels = np.where((nxt > 0) & ~np.append(starts[1:], True), nxt, -100)
    L = 64
    seen_masked = 0
    for step in range(len(loader.packs)):
        batch = loader.get_batch(step)
        (idx,) = loader.schedule.pack_indices(step, 0)
        sl = slice(int(idx) * L, (int(idx) + 1) * L)
        np.testing.assert_array_equal(batch["input_ids"][0, 0], np.abs(stream[sl]))
        np.testing.assert_array_equal(batch["labels"][0, 0], labels[sl])
        seen_masked += int((nxt[sl] < 0).sum())
        assert (batch["labels"][0, 0][nxt[sl] < 0] == -100).all()  # a prompt token is never a target
    assert seen_masked > 0

    valid_cfg = data_config(
        vocab_size=103168, valid_folder=str(tmp_path / "out" / "valid"), seq_len=64, micro_bsz=1
    )
    first_valid = BinSource(tmp_path / "out" / "valid" / "en" / "dataset.bin")[0][:64]
    batch = next(iter(build_valid_loaders(valid_cfg, dp_size=1, dp_ranks=[0])["en"]))
    valid_labels = batch["labels"][0, 0, : len(first_valid) - 1]
    assert (first_valid[1:] < 0).any() and (valid_labels[first_valid[1:] < 0] == -100).all()


def test_record_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"instruction": "x", "output": "y"}\n{"instruction": "x", "output": "y",\n')
    with pytest.raises(DataError, match=r"a\.jsonl, line 2 column \d+: not valid JSON"):
        read_alpaca_records(p)
    p.write_text('{"instruction": "x", "output": "y"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"a\.jsonl, record 2 is a JSON list, not an object"):
        read_alpaca_records(p)
    p.write_text("")
    with pytest.raises(DataError, match="no records"):
        read_alpaca_records(p)
    with pytest.raises(DataError, match="does not exist"):
        read_alpaca_records(tmp_path / "none.json")


def test_special_ids_outside_vocab(tmp_path, internlm_tokenizer):
    src = tmp_path / "sft.jsonl"
    _write_jsonl(src, 3)
    with pytest.raises(DataError, match=r"eoh_id=200000 is outside the vocabulary.*--eoh_id"):
        tokenize_alpaca(src, tmp_path / "out", internlm_tokenizer, eoh_id=200000)
    assert not (tmp_path / "out" / "train" / "en" / "dataset.bin").exists()
    with pytest.raises(DataError, match="none.model does not exist.*TOKENIZER argument"):
        tokenize_alpaca(src, tmp_path / "out", tmp_path / "none.model")
