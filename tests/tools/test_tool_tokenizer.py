"""tools/tokenizer.py as a user runs it: output files, exit codes, messages."""

from __future__ import annotations

import json

import numpy as np
import sentencepiece as spm
from tool_helpers import run_tool, small_tokenizer


def test_txt_to_bin_and_meta(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.txt"
    src.write_text("今天天气晴朗适合出门散步\n\nThe quick brown fox.\n", encoding="utf-8")
    out = tmp_path / "train" / "cn" / "in.bin"
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        src,
        "--bin_output_path",
        out,
        "--tokenizer_path",
        internlm_tokenizer,
    )
    assert r.returncode == 0, r.stderr
    assert "Successfully generated" in r.stdout and "100.0%" in r.stderr
    sp = spm.SentencePieceProcessor(model_file=str(internlm_tokenizer))
    lines = out.read_bytes().splitlines(keepends=True)
    texts = ["今天天气晴朗适合出门散步", "The quick brown fox."]
    assert [json.loads(x)["tokens"] for x in lines] == [[1, *sp.encode(t), 2] for t in texts]
    meta = np.load(str(out) + ".meta")
    assert meta.dtype == np.int32 and meta.tolist() == [
        [0, len(json.loads(lines[0])["tokens"])],
        [len(lines[0]), len(json.loads(lines[1])["tokens"])],
    ]


def test_non_utf8_fails_with_line_number(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"a": 1}\n{"a": "\xe9t\xe9"}\n')
    out = tmp_path / "o.bin"
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        src,
        "--bin_output_path",
        out,
        "--tokenizer_path",
        internlm_tokenizer,
    )
    assert r.returncode != 0
    assert "in.jsonl, line 2" in r.stderr and "UTF-8" in r.stderr and "--errors skip" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        src,
        "--bin_output_path",
        out,
        "--tokenizer_path",
        internlm_tokenizer,
        "--errors",
        "skip",
    )
    assert r.returncode == 0 and "Skipped 1 lines" in r.stderr and len(out.read_bytes().splitlines()) == 1


def test_empty_input_fails_without_output(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.txt"
    src.write_text("\n\n")
    out = tmp_path / "o.bin"
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        src,
        "--bin_output_path",
        out,
        "--tokenizer_path",
        internlm_tokenizer,
    )
    assert r.returncode != 0 and "no samples" in r.stderr and "in.txt" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_missing_default_tokenizer_is_explained(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        src,
        "--bin_output_path",
        tmp_path / "o.bin",
        "--tokenizer_path",
        tmp_path / "none.model",
    )
    assert r.returncode != 0 and "none.model does not exist" in r.stderr and "--tokenizer_path" in r.stderr


def test_missing_input(tmp_path, internlm_tokenizer):
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        tmp_path / "nope.txt",
        "--bin_output_path",
        tmp_path / "o.bin",
        "--tokenizer_path",
        internlm_tokenizer,
    )
    assert r.returncode != 0 and "nope.txt does not exist" in r.stderr


def test_jsonl_lines_that_are_not_json_are_tokenized_raw_with_one_warning(tmp_path):
    tokenizer, _ = small_tokenizer(tmp_path / "small.model")
    src = tmp_path / "in.jsonl"
    lines = ['{"text": "the quick fox"}\n', "not json at all\n", '{"text": "judge my vow"}\n', "{cut off\n"]
    src.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "o.bin"
    r = run_tool(
        "tokenizer.py",
        "--text_input_path",
        src,
        "--bin_output_path",
        out,
        "--tokenizer_path",
        tokenizer,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    assert [json.loads(x)["tokens"] for x in out.read_bytes().splitlines()] == [
        [1, *sp.encode(t), 2] for t in lines
    ]
    warnings = [line for line in r.stderr.splitlines() if "not JSON" in line]
    assert warnings == [
        f"WARNING: {src}: 2 lines are not JSON (the first: line 2); each .jsonl line is tokenized as raw text, "
        "so these were too (as in InternEvo). Fix them if the file should hold one JSON record per line."
    ]
