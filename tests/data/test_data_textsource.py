"""One text-reading module: RecordText says what a record's text is, for both readers."""

from __future__ import annotations

import json
import logging

import pytest

from internevo_jax.data import DataError
from internevo_jax.data.textsource import JsonlFile, ListFile, RecordText, TextReader

RECORDS = [{"text": "first", "id": 1}, {"text": "第二", "id": 2}]


def _jsonl(path):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS) + "\n", "utf-8")
    return path


def test_whole_record_is_the_tokenizer_tools_text(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl")
    lines = src.read_text("utf-8").splitlines(keepends=True)
    assert list(TextReader(src)) == lines  # raw lines, newline and the blank line included
    assert list(TextReader(src, mode=RecordText.WHOLE)) == lines
    listed = tmp_path / "in.json"
    listed.write_text(json.dumps(RECORDS), "utf-8")
    assert list(TextReader(listed)) == [json.dumps(r) for r in RECORDS]


def test_field_is_the_streaming_text(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl")
    stream = JsonlFile(str(src), "text")
    from_stream = [stream.text(raw, pos) for pos, _, raw in stream.scan(0)]
    assert from_stream == ["first", "第二"]
    assert list(TextReader(src, mode=RecordText.FIELD)) == from_stream
    listed = tmp_path / "in.json"
    listed.write_text(json.dumps(RECORDS), "utf-8")
    assert list(TextReader(listed, mode=RecordText.FIELD, field="text")) == from_stream
    records = ListFile(str(listed), "text")
    assert [records.text(raw, pos) for pos, _, raw in records.scan(0)] == from_stream


def test_field_errors_name_the_place(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n{"body": "no text"}\n', "utf-8")
    with pytest.raises(DataError, match=r"in.jsonl, line 2 has no 'text' field"):
        list(TextReader(src, mode=RecordText.FIELD))
    txt = tmp_path / "in.txt"
    txt.write_text("plain\n", "utf-8")
    with pytest.raises(DataError, match="no 'text' field"):
        TextReader(txt, mode=RecordText.FIELD)


def test_jsonl_lines_that_are_not_json_are_kept_raw_and_counted_once(tmp_path, caplog):
    lines = ['{"text": "a"}\n', "plain words\n", '{"text": "b"}\n', "{broken\n", "\n", "[1, 2]\n", "tail"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="internevo_jax.data.textsource")
    reader = TextReader(path)
    assert list(reader) == lines  # every line is the text, JSON or not, as InternEvo's tool reads it
    assert (reader.not_json, reader.first_not_json) == (3, 2)  # blank lines are not counted
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}: 3 lines are not JSON (the first: line 2)")
    caplog.clear()
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a"}\n\n{"b": 1}\n', encoding="utf-8")
    assert len(list(TextReader(good))) == 3 and not caplog.records
