"""Tokenization against InternEvo's text2bin (text-mode reading + sentencepiece + BOS/EOS)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece as spm

from internevo_jax.data import DataError
from internevo_jax.data.textsource import TextReader
from internevo_jax.preprocess.tokenize import tokenize_file


def reference_text2bin(path, sp) -> bytes:
    """InternEvo's tools/tokenizer.py: text-mode reading, [bos] + encode + [eos], one JSON line each."""
    fmt = str(path).rsplit(".", 1)[-1]
    with open(path, encoding="utf-8") as f:
        if fmt == "txt":
            texts = [ln.strip() for ln in f if ln.strip()]
        elif fmt == "json":
            texts = [json.dumps(r) for r in json.load(f)]
        else:
            texts = list(f)
    out = b""
    for t in texts:
        out += (json.dumps({"tokens": [sp.bos_id(), *sp.encode(t), sp.eos_id()]}) + "\n").encode()
    return out


def reference_meta(bin_bytes: bytes) -> np.ndarray:
    rows, cur = [], 0
    for line in bin_bytes.splitlines(keepends=True):
        rows.append((cur, len(json.loads(line)["tokens"])))
        cur += len(line)
    return np.array(rows, dtype=np.int32)


TEXT = "Hello world\n\n   indented line with spaces   \n中文：今天天气晴朗。\nline with\ttab\r\nwindows line\rold mac line\n"
RECORDS = [{"text": "first record", "meta": {"lang": "en"}}, {"text": "第二条"}, {"n": [1, 2.5, None, True]}]


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "json"])
def test_matches_internevo(tmp_path, internlm_tokenizer, fmt):
    src = tmp_path / f"in.{fmt}"
    if fmt == "json":
        src.write_text(json.dumps(RECORDS, ensure_ascii=False, indent=2), encoding="utf-8")
    elif fmt == "jsonl":
        src.write_bytes(("\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\n\n{}").encode())
    else:
        src.write_bytes(TEXT.encode())
    out = tmp_path / "out" / "en" / "data.bin"
    stats = tokenize_file(src, out, tokenizer_path=internlm_tokenizer)
    sp = spm.SentencePieceProcessor(model_file=str(internlm_tokenizer))
    expected = reference_text2bin(src, sp)
    assert out.read_bytes() == expected
    meta = np.load(str(out) + ".meta")
    assert meta.dtype == np.int32
    np.testing.assert_array_equal(meta, reference_meta(expected))
    assert stats.samples == len(meta) and stats.tokens == int(meta[:, 1].sum())


def test_workers_keep_order(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.txt"
    src.write_text("".join(f"sample number {i} says {'abc ' * (i % 7)}\n" for i in range(700)))
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    tokenize_file(src, one, tokenizer_path=internlm_tokenizer)
    tokenize_file(src, two, tokenizer_path=internlm_tokenizer, num_workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert open(str(one) + ".meta", "rb").read() == open(str(two) + ".meta", "rb").read()


def test_existing_output_is_replaced_not_appended(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    out = tmp_path / "o.bin"
    tokenize_file(src, out, tokenizer_path=internlm_tokenizer)
    first = out.read_bytes()
    tokenize_file(src, out, tokenizer_path=internlm_tokenizer)
    assert out.read_bytes() == first


def test_json_streaming_across_buffer_boundaries(tmp_path):
    records = [{"text": "x" * (i % 13), "v": 12345678901234 + i, "u": "é中"} for i in range(50)]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(records, ensure_ascii=False))
    for size in (1, 3, 7, 64):
        reader = TextReader(src)
        reader.chunk_size = size
        assert list(reader) == [json.dumps(r) for r in records]
        assert reader.bytes_read == src.stat().st_size


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"a": 1}', "top level is not a list"),
        (b'[{"a": 1}, {"a": 2}', "before the list is closed"),
        (b'[{"a": 1} {"a": 2}]', "expected ','"),
        (b'[{"a": 1},\n {"a": tru}]', "line 2"),
        (b'[{"a": 1}] [2]', "extra data"),
    ],
)
def test_malformed_json(tmp_path, content, words):
    src = tmp_path / "bad.json"
    src.write_bytes(content)
    with pytest.raises(DataError) as e:
        list(TextReader(src))
    assert words in str(e.value) and "bad.json" in str(e.value)


def test_non_utf8_line_strict_and_skip(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.txt"
    src.write_bytes(b"good one\nalso good\nbad \xff\xfe line\nlast\n")
    out = tmp_path / "o.bin"
    with pytest.raises(DataError) as e:
        tokenize_file(src, out, tokenizer_path=internlm_tokenizer)
    assert "in.txt, line 3" in str(e.value) and "UTF-8" in str(e.value)
    assert not out.exists() and not list(tmp_path.glob("*.meta")) and not list(tmp_path.glob(".*"))
    stats = tokenize_file(src, out, tokenizer_path=internlm_tokenizer, errors="skip")
    assert stats.samples == 3 and stats.skipped_lines == 1


def test_non_utf8_json_record(tmp_path):
    src = tmp_path / "in.json"
    src.write_bytes(b'[{"t": "ok"},\n{"t": "bad \xff"}, {"t": "ok2"}]')
    with pytest.raises(DataError, match="line 2"):
        list(TextReader(src))
    reader = TextReader(src, errors="skip")
    assert list(reader) == ['{"t": "ok"}', '{"t": "ok2"}'] and reader.skipped == 1


def test_empty_input_writes_nothing(tmp_path, internlm_tokenizer):
    src = tmp_path / "in.txt"
    src.write_text("\n   \n\n")
    out = tmp_path / "o.bin"
    with pytest.raises(DataError, match="no samples"):
        tokenize_file(src, out, tokenizer_path=internlm_tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_missing_tokenizer_and_bad_extension(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    with pytest.raises(DataError, match="does not exist"):
        tokenize_file(src, tmp_path / "o.bin", tokenizer_path=tmp_path / "missing.model")
    (tmp_path / "in.csv").write_text("x\n")
    with pytest.raises(DataError, match=r"\.txt"):
        TextReader(tmp_path / "in.csv")
