"""Helpers for the data tests: config stand-ins, small tokenized folders, the real tokenizer."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from internevo_jax.data.binmeta import write_bin

SHARED_TOKENIZERS = Path(__file__).resolve().parents[2] / ".." / "shared" / "tokenizers"


def data_config(vocab_size: int = 1000, seed: int = 1024, **data) -> types.SimpleNamespace:
    """A config stand-in with InternEvo's data keys (attribute access only)."""
    d = dict(
        seq_len=16,
        micro_bsz=2,
        micro_num=2,
        valid_micro_num=2,
        valid_every=0,
        pack_sample_into_one=False,
        total_steps=20,
        skip_batches="",
        rampup_batch_size="",
        min_length=0,
        train_folder=None,
        valid_folder=None,
        num_worker=0,
        type="tokenized",
        tokenizer_path=None,
        fixed_random_dataset_seqlen=False,
    )
    d.update(data)
    d["packed_length"] = d["seq_len"] * d["micro_bsz"]
    return types.SimpleNamespace(
        data=types.SimpleNamespace(**d), model=types.SimpleNamespace(vocab_size=vocab_size), seed=seed
    )


def write_folder(root: Path, files: dict[str, list[list[int]]]) -> Path:
    """Write {"en/a.bin": [[tokens], ...], ...} under root; returns root."""
    for rel, samples in files.items():
        write_bin(root / rel, samples)
    return root


def internlm_tokenizer_path() -> Path:
    """The real InternLM tokenizer, or skip the calling test."""
    path = SHARED_TOKENIZERS / "tokenizer_internlm.model"
    if not path.is_file():
        pytest.skip(f"InternLM tokenizer not found at {path}")
    return path.resolve()
