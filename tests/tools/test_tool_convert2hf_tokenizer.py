"""tools/convert2hf.py --tokenizer: a tokenizer whose piece count is not the model's vocab_size is
refused before any weight is read, unless --allow_vocab_mismatch (then a warning)."""

from __future__ import annotations

import logging

import pytest
from tool_helpers import call_tools, small_tokenizer, tiny_checkpoint

from internevo_jax.data.tokenizer import vocab_mismatch


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert2hf_tokenizer")
    tokenizer, pieces = small_tokenizer(root / "small.model")
    assert pieces > 101
    return tokenizer, pieces, tiny_checkpoint(root / "vocab101", 101), tiny_checkpoint(root / "same", pieces)


def test_vocab_mismatch_rule():
    assert vocab_mismatch(300, 300) is None and vocab_mismatch(300, 300, exact=True) is None
    assert vocab_mismatch(200, 300) is None  # a padded vocabulary fits the training data check
    assert "fall outside the model's embedding table" in vocab_mismatch(301, 300)
    assert "most likely not the tokenizer" in vocab_mismatch(200, 300, exact=True)


def test_larger_tokenizer_is_refused(setup, tmp_path):
    tokenizer, pieces, small_model, _ = setup
    argv = ["--src", small_model, "--tgt", tmp_path / "hf", "--tokenizer", tokenizer]
    code, err = call_tools({"convert2hf": argv})["convert2hf"]
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --tokenizer {tokenizer} has {pieces} pieces but model.vocab_size is 101")
    assert "--allow_vocab_mismatch" in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()


def test_mismatch_allowed_with_a_warning(setup, tmp_path, caplog):
    tokenizer, pieces, small_model, _ = setup
    argv = [
        "--src",
        small_model,
        "--tgt",
        tmp_path / "hf",
        "--tokenizer",
        tokenizer,
        "--allow_vocab_mismatch",
    ]
    with caplog.at_level(logging.WARNING):
        code, err = call_tools({"convert2hf": argv})["convert2hf"]
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"has {pieces} pieces but model.vocab_size is 101" in w for w in warnings), warnings
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == tokenizer.read_bytes()


def test_matching_tokenizer_exports_without_a_warning(setup, tmp_path, caplog):
    tokenizer, _, _, same = setup
    with caplog.at_level(logging.WARNING):
        code, err = call_tools(
            {"convert2hf": ["--src", same, "--tgt", tmp_path / "hf", "--tokenizer", tokenizer]}
        )["convert2hf"]
    assert code == 0, err
    assert not [r for r in caplog.records if "vocab_size" in r.getMessage()]
    assert (tmp_path / "hf" / "tokenizer.model").is_file()


def test_smaller_tokenizer_is_refused_too(setup, tmp_path):
    """A tokenizer with fewer pieces than the model's ids is most likely another model's."""
    tokenizer, pieces, _, _ = setup
    larger = tiny_checkpoint(tmp_path / "vocab512", 512)
    code, err = call_tools(
        {"convert2hf": ["--src", larger, "--tgt", tmp_path / "hf", "--tokenizer", tokenizer]}
    )["convert2hf"]
    assert code == 2 and f"has {pieces} pieces but model.vocab_size is 512" in err and "padded" in err
