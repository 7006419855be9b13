"""Helpers for the data tests: config stand-ins, small tokenized folders, the real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from internevo_jax.config import Config, config_from_dict
from internevo_jax.data.binmeta import write_bin

SHARED_TOKENIZERS = Path(__file__).resolve().parents[2] / ".." / "shared" / "tokenizers"


# Test-sized data settings; every other key keeps the schema's (InternEvo's) default.
TEST_DATA = dict(
    seq_len=16,
    micro_bsz=2,
    micro_num=2,
    valid_micro_num=2,
    total_steps=20,
    num_worker=0,  # batches built in this process; worker tests set num_worker themselves
    fixed_random_dataset_seqlen=False,  # mock samples of random lengths exercise the packing
)


def data_config(vocab_size: int = 1000, seed: int = 1024, **data) -> Config:
    """A real Config (schema defaults, resolved and validated) with test-sized `data` settings."""
    d = {**TEST_DATA, **data}
    for key in ("train_folder", "valid_folder", "tokenizer_path"):
        if isinstance(d.get(key), os.PathLike):
            d[key] = os.fspath(d[key])
    return config_from_dict(
        dict(data=d, model=dict(vocab_size=vocab_size), seed=seed), "<test data config>", log=lambda *_: None
    )


def write_folder(root: Path, files: dict[str, list[list[int]]]) -> Path:
    """Write {"en/a.bin": [[tokens], ...], ...} under root; returns root."""
    for rel, samples in files.items():
        write_bin(root / rel, samples)
    return root


def small_corpus(
    root: Path, seed: int = 0, files=(("en/a.bin", 40), ("en/b.bin", 25), ("code/c.bin", 30))
) -> Path:
    """A few .bin files of random samples ([1, ids..., 2], 5 to 51 tokens) under root/<type>/."""
    rng = np.random.default_rng(seed)
    spec = {}
    for rel, n in files:
        spec[rel] = [[1, *rng.integers(3, 900, size=int(rng.integers(3, 50))).tolist(), 2] for _ in range(n)]
    return write_folder(root, spec)


def internlm_tokenizer_path() -> Path:
    """The real InternLM tokenizer, or skip the calling test."""
    path = SHARED_TOKENIZERS / "tokenizer_internlm.model"
    if not path.is_file():
        pytest.skip(f"InternLM tokenizer not found at {path}")
    return path.resolve()


def reference_stream_packs(samples, packed_length: int, count: int) -> dict:
    """Inputs and labels of packs 0..count-1 of `samples` concatenated (repeated as needed), by the packing rules.

    A label is the next token of the same sample if it is > 0, else -100; the last token of a sample
    gets -100. Returns {"input_ids": [count, L], "labels": [count, L]}.
    """
    need = packed_length * count + 1
    seq, starts = [], []
    while sum(len(s) for s in seq) < need:
        for s in samples:
            starts.append(sum(len(x) for x in seq))
            seq.append(np.asarray(s, dtype=np.int64))
    stream = np.concatenate(seq)
    is_start = np.zeros(len(stream) + 1, bool)
    is_start[starts] = True
    is_start[len(stream)] = True
    nxt = np.append(stream[1:], -100)
    labels = np.where((nxt > 0) & ~is_start[1:], nxt, -100)
    L = packed_length
    return {
        "input_ids": np.abs(stream[: L * count]).reshape(count, L),
        "labels": labels[: L * count].reshape(count, L),
    }
