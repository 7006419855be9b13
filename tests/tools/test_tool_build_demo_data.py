"""tools/build_demo_data.py on a small cap: loadable real-text data, deterministic, idempotent."""

from __future__ import annotations

import json

import numpy as np
import sentencepiece as spm
from tool_helpers import run_tool

from internevo_jax.config import config_from_dict
from internevo_jax.data import build_train_loader, build_valid_loaders
from internevo_jax.preprocess.demo_corpus import build_demo_corpus


def _cfg(folder, vocab):
    data = dict(
        seq_len=64,
        micro_bsz=2,
        micro_num=2,
        valid_micro_num=2,
        train_folder=str(folder / "train"),
        valid_folder=str(folder / "valid"),
        total_steps=3,
        num_worker=0,
    )
    return config_from_dict(dict(data=data, model=dict(vocab_size=vocab), seed=1), log=lambda *_: None)


def test_demo_corpus_builds_loadable_data(tmp_path):
    out = tmp_path / "demo"
    r = run_tool("build_demo_data.py", "--out", out, "--vocab_size", 400, "--max_text_bytes", 120_000)
    assert r.returncode == 0, r.stderr
    record = json.loads((out / ".complete").read_text())
    assert record["params"]["vocab_size"] == 400
    for split in ("train", "valid"):
        for kind in ("code", "en"):
            assert (out / split / kind / "demo.bin.meta").is_file()
            assert record["stats"][f"{split}/{kind}"]["samples"] > 0
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    vocab = sp.get_piece_size()
    assert vocab <= 400

    loader = build_train_loader(_cfg(out, vocab), dp_size=1, dp_ranks=[0])
    batch = loader.get_batch(0)
    assert batch["input_ids"].shape == (2, 1, 128) and batch["input_ids"].max() < vocab
    text = sp.decode(batch["input_ids"][0, 0].tolist())
    assert len(text) > 50  # real text decodes back to text
    assert set(np.unique(loader.packs[0]["type_ids"])) == {0}  # code (type 0) is packed first
    valid = build_valid_loaders(_cfg(out, vocab), dp_size=1, dp_ranks=[0])
    assert set(valid) == {"code", "en"}

    # Same parameters: nothing is rebuilt; the same build elsewhere gives the same bytes.
    before = (out / "train" / "en" / "demo.bin").stat().st_mtime_ns
    build_demo_corpus(out, vocab_size=400, max_text_bytes=120_000, log=lambda s: None)
    assert (out / "train" / "en" / "demo.bin").stat().st_mtime_ns == before
    again = tmp_path / "again"
    build_demo_corpus(again, vocab_size=400, max_text_bytes=120_000, log=lambda s: None)
    for rel in ("tokenizer.model", "train/code/demo.bin", "valid/en/demo.bin.meta"):
        assert (again / rel).read_bytes() == (out / rel).read_bytes()


def test_demo_corpus_with_given_tokenizer(tmp_path, internlm_tokenizer):
    out = tmp_path / "demo"
    record = build_demo_corpus(
        out, max_text_bytes=60_000, tokenizer_path=internlm_tokenizer, log=lambda s: None
    )
    assert record["tokenizer_vocab_size"] == 103168
    assert (out / "tokenizer.model").read_bytes() == internlm_tokenizer.read_bytes()
