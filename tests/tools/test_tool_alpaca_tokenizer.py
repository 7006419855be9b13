"""tools/alpaca_tokenizer.py as a user runs it: InternLM chat format, masked prompts, the split."""

from __future__ import annotations

import json

import numpy as np
import sentencepiece as spm
from tool_helpers import run_tool

EOH, EOA, NL = 103167, 103166, 13


def _records(n=30):
    out = []
    for i in range(n):
        out.append(
            {
                "instruction": f"Give three tips number {i}.",
                "input": "" if i % 3 == 0 else f"context {i}: 今天天气晴朗",
                "output": f"Answer {i}: eat well, sleep well, move.",
            }
        )
    out[7]["output"] = "long " * 3000  # beyond 2047 tokens: cut, then eos
    return out


def reference_tokens(record, sp) -> list[int]:
    """InternEvo's InternLM1 alpaca format, written out from its definition."""
    user = f"<|User|>:{record['instruction']}"
    if record["input"] != "":
        user += f"\n{record['input']}"
    prompt = sp.encode(user) + [EOH, NL] + sp.encode("<|Bot|>:")
    ids = [sp.bos_id()] + [-t for t in prompt] + sp.encode(record["output"]) + [EOA, NL]
    return ids[:2047] + [sp.eos_id()]


def _read(bin_path):
    lines = bin_path.read_bytes().splitlines(keepends=True)
    return [json.loads(x)["tokens"] for x in lines], lines


def test_alpaca_output_matches_reference(tmp_path, internlm_tokenizer):
    records = _records()
    src = tmp_path / "alpaca_data.json"
    src.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    r = run_tool("alpaca_tokenizer.py", src, out, internlm_tokenizer, "--split_ratio", "0.2")
    assert r.returncode == 0, r.stderr

    sp = spm.SentencePieceProcessor(model_file=str(internlm_tokenizer))
    np.random.seed(0)  # InternEvo's split, with replacement
    chosen = set(np.random.choice(range(len(records)), int(len(records) * 0.2)).tolist())
    expected = [reference_tokens(rec, sp) for rec in records]
    train, train_lines = _read(out / "train" / "en" / "dataset.bin")
    valid, _ = _read(out / "valid" / "en" / "dataset.bin")
    assert train == [t for i, t in enumerate(expected) if i not in chosen]
    assert valid == [t for i, t in enumerate(expected) if i in chosen]
    assert len(valid) == len(chosen) and 0 < len(valid) <= 6
    assert f"number of train dataset: {len(train)}," in r.stdout

    meta = np.load(str(out / "train" / "en" / "dataset.bin") + ".meta")
    assert meta.dtype == np.int64 and meta.shape == (len(train), 2)
    assert meta[:, 1].tolist() == [len(t) for t in train]
    assert meta[:, 0].tolist() == np.cumsum([0] + [len(x) for x in train_lines[:-1]]).tolist()

    # The prompt is negative up to the answer; bos, answer, eoa, newline and eos are positive.
    first = expected[1]
    n_prompt = (
        len(sp.encode(f"<|User|>:{records[1]['instruction']}\n{records[1]['input']}"))
        + 2
        + len(sp.encode("<|Bot|>:"))
    )
    assert first[0] == 1 and all(t < 0 for t in first[1 : 1 + n_prompt])
    assert all(t > 0 for t in first[1 + n_prompt :]) and first[-3:] == [EOA, NL, 2]
    assert len(expected[7]) == 2048 and expected[7][-1] == 2


def test_alpaca_errors_name_file_and_record(tmp_path, internlm_tokenizer):
    out = tmp_path / "out"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": }]')
    r = run_tool("alpaca_tokenizer.py", bad_json, out, internlm_tokenizer)
    assert r.returncode == 2 and "bad.json, line 2" in r.stderr and "not valid JSON" in r.stderr
    assert "Traceback" not in r.stderr

    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "input": ""}]))
    r = run_tool("alpaca_tokenizer.py", missing, out, internlm_tokenizer)
    assert r.returncode == 2 and "missing.json, record 2 has no 'output' field" in r.stderr

    wrong_type = tmp_path / "type.json"
    wrong_type.write_text(json.dumps([{"instruction": "a", "output": 3}]))
    r = run_tool("alpaca_tokenizer.py", wrong_type, out, internlm_tokenizer)
    assert r.returncode == 2 and "record 1: field 'output' is a JSON int" in r.stderr

    not_list = tmp_path / "obj.json"
    not_list.write_text(json.dumps({"instruction": "a", "output": "b"}))
    r = run_tool("alpaca_tokenizer.py", not_list, out, internlm_tokenizer)
    assert r.returncode == 2 and "not a list" in r.stderr
    assert not out.exists()  # nothing is written for a bad input
