"""The .bin/.bin.meta format: writer bytes, reader, folder walk, and every malformed-input error."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_helpers import write_folder

from internevo_jax.data import (
    BinSource,
    BinWriter,
    DataError,
    find_bin_files,
    load_bin_folder,
    read_meta,
    write_bin,
)

SAMPLES = [[1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 10, 11, 2], [1, -3, -4, 12, 2]]


def test_writer_bytes_and_meta_match_internevo(tmp_path):
    path = tmp_path / "en" / "a.bin"
    assert write_bin(path, SAMPLES) == 4
    expected = b"".join((json.dumps({"tokens": s}) + "\n").encode() for s in SAMPLES)
    assert path.read_bytes() == expected
    meta = np.load(str(path) + ".meta")
    assert meta.dtype == np.int32 and meta.shape == (4, 2)
    # Recompute the meta the way InternEvo's prepare_meta does: offsets of lines, token counts.
    offsets, cur = [], 0
    for line in expected.splitlines(keepends=True):
        offsets.append((cur, len(json.loads(line)["tokens"])))
        cur += len(line)
    np.testing.assert_array_equal(meta, np.array(offsets, dtype=np.int32))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_writer_abort_leaves_nothing(tmp_path):
    path = tmp_path / "a.bin"
    with pytest.raises(RuntimeError), BinWriter(path) as w:
        w.write([1, 2])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_reader_int32_and_int64_meta(tmp_path):
    path = tmp_path / "en" / "a.bin"
    write_bin(path, SAMPLES)
    for dtype in (np.int32, np.int64):
        meta = np.load(str(path) + ".meta").astype(dtype)
        with open(str(path) + ".meta", "wb") as f:  # as alpaca_tokenizer.py writes it: int64
            np.save(f, meta)
        src = BinSource(path, type_id=3, vocab_size=100)
        assert len(src) == 4 and src.type_id == 3
        np.testing.assert_array_equal(src.lengths, [4, 3, 6, 5])
        for i, s in enumerate(SAMPLES):
            got = src[i]
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, s)
    assert read_meta(path).dtype == np.int64


def test_min_length_filters_from_meta(tmp_path):
    path = tmp_path / "en" / "a.bin"
    write_bin(path, SAMPLES)
    src = BinSource(path, min_length=5)
    np.testing.assert_array_equal(src.lengths, [6, 5])
    np.testing.assert_array_equal(src[1], SAMPLES[3])
    assert src.num_unfiltered == 4


def test_folder_walk_order_and_type_ids(tmp_path):
    write_folder(
        tmp_path,
        {"en/b.bin": [[1, 2]], "en/a.bin": [[1, 2]], "code/z/x.bin": [[1, 2]], "cn/c.bin": [[1, 2]]},
    )
    (tmp_path / "README.md").write_text("not data")  # InternEvo numbers every entry, files too
    got = [(os.path.relpath(p, tmp_path), t) for p, t in find_bin_files(tmp_path)]
    # sorted entries: README.md=0, cn=1, code=2, en=3; the walk visits cn, code, en in order.
    assert got == [("cn/c.bin", 1), ("code/z/x.bin", 2), ("en/a.bin", 3), ("en/b.bin", 3)]


def test_sources_are_picklable_and_reopen(tmp_path):
    import pickle

    path = tmp_path / "en" / "a.bin"
    write_bin(path, SAMPLES)
    src = BinSource(path)
    src[0]
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone[2], SAMPLES[2])


# -- errors: each names the file and says what to do -------------------------------------------------


def _message(excinfo) -> str:
    return str(excinfo.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError) as e:
        find_bin_files(tmp_path / "nope")
    assert "does not exist" in _message(e) and "nope" in _message(e)


def test_empty_folder(tmp_path):
    (tmp_path / "en").mkdir()
    with pytest.raises(DataError) as e:
        find_bin_files(tmp_path)
    assert "no .bin files" in _message(e) and "tools/tokenizer.py" in _message(e)


def test_bin_directly_in_root(tmp_path):
    write_bin(tmp_path / "a.bin", [[1, 2]])
    with pytest.raises(DataError) as e:
        find_bin_files(tmp_path)
    assert "a.bin" in _message(e) and "type subfolder" in _message(e)


def test_bin_without_meta(tmp_path):
    path = tmp_path / "en" / "a.bin"
    write_bin(path, SAMPLES)
    os.remove(str(path) + ".meta")
    with pytest.raises(DataError) as e:
        load_bin_folder(tmp_path)
    assert "a.bin.meta" in _message(e) and str(path) in _message(e)


@pytest.mark.parametrize(
    "meta, words",
    [
        (np.zeros((3, 3), np.int32), "shape (N, 2)"),
        (np.zeros((3, 2), np.float64), "integer"),
        (np.array([[0, 4], [10_000, 3]], np.int32), "row 1"),
        (np.array([[0, 4], [-5, 3]], np.int32), "row 1"),
        (b"garbage", "Cannot read the meta"),
    ],
)
def test_corrupt_meta(tmp_path, meta, words):
    path = tmp_path / "en" / "a.bin"
    write_bin(path, SAMPLES)
    meta_path = str(path) + ".meta"
    if isinstance(meta, bytes):
        open(meta_path, "wb").write(meta)
    else:
        np.save(open(meta_path, "wb"), meta)
    with pytest.raises(DataError) as e:
        BinSource(path)
    assert words in _message(e) and "a.bin" in _message(e)


def test_empty_meta_is_an_empty_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"")
    np.save(open(str(path) + ".meta", "wb"), np.array([], dtype=np.int32))
    assert len(BinSource(path)) == 0


def _corrupt_line(tmp_path, line_index: int, new_line: bytes):
    """Replace line `line_index` of a written file, keeping the meta (as a damaged copy would)."""
    path = tmp_path / "en" / "a.bin"
    write_bin(path, SAMPLES)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[line_index] = new_line
    path.write_bytes(b"".join(lines))
    meta = np.load(str(path) + ".meta")
    meta[:, 0] = np.concatenate([[0], np.cumsum([len(x) for x in lines])[:-1]])
    np.save(open(str(path) + ".meta", "wb"), meta)
    return BinSource(path, vocab_size=100)


def test_truncated_last_line(tmp_path):
    src = _corrupt_line(tmp_path, 3, b'{"tokens": [1, -3, -4')
    np.testing.assert_array_equal(src[2], SAMPLES[2])  # other lines still read
    with pytest.raises(DataError) as e:
        src[3]
    assert "line 4" in _message(e) and "truncated or corrupt" in _message(e) and "a.bin" in _message(e)


def test_line_not_matching_meta_length(tmp_path):
    src = _corrupt_line(tmp_path, 1, b'{"tokens": [1, 7, 7, 2]}\n')
    with pytest.raises(DataError) as e:
        src[1]
    assert "line 2" in _message(e) and "meta says 3" in _message(e)


def test_token_out_of_vocab(tmp_path):
    src = _corrupt_line(tmp_path, 2, b'{"tokens": [1, 8, 100, 10, 11, 2]}\n')
    with pytest.raises(DataError) as e:
        src[2]
    assert "line 3" in _message(e) and "token id 100" in _message(e) and "vocab_size" in _message(e)


def test_negative_token_out_of_vocab(tmp_path):
    src = _corrupt_line(tmp_path, 3, b'{"tokens": [1, -300, -4, 12, 2]}\n')
    with pytest.raises(DataError) as e:
        src[3]
    assert "token id -300" in _message(e)


@pytest.mark.parametrize(
    "bad", [b'{"tokens": [1, 2.5, 3, 2]}\n', b'{"tokens": "abcd"}\n', b'{"toks": [1, 2, 3, 4]}\n']
)
def test_invalid_token_values(tmp_path, bad):
    src = _corrupt_line(tmp_path, 0, bad)
    with pytest.raises(DataError) as e:
        src[0]
    assert "line 1" in _message(e)


def test_non_utf8_line(tmp_path):
    src = _corrupt_line(tmp_path, 1, b'{"tokens": [1, 7, 2]}\xff\xfe\n')
    with pytest.raises(DataError) as e:
        src[1]
    assert "line 2" in _message(e) and "UTF-8" in _message(e)
