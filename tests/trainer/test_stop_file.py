"""The stop file survives what a user may put at its path: binary bytes, text, a directory."""

from __future__ import annotations

import logging
import os

import pytest

from internevo_jax.trainer.run_control import SAVE, StopFile


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="internevo_jax")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _touch_later(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_binary_bytes_are_reported_once_per_change_and_ignored(tmp_path, warnings):
    path = tmp_path / "stop"
    path.write_bytes(b"\xff\xfe\x00\x80garbage\xc3")
    watcher = StopFile(str(path))
    assert [watcher.action(s) for s in (1, 2, 3)] == [0, 0, 0]
    assert len(warnings()) == 1 and "not an integer" in warnings()[0] and str(path) in warnings()[0]
    path.write_bytes(b"\x00\x01\x02")  # another content: reported again, once
    _touch_later(path)
    assert [watcher.action(s) for s in (4, 5)] == [0, 0]
    assert len(warnings()) == 2
    path.write_bytes(b"-6\n")  # a valid request after the garbage still works
    _touch_later(path)
    assert watcher.action(6) == SAVE


def test_latin1_digits_and_a_huge_file_are_not_fatal(tmp_path, warnings):
    path = tmp_path / "stop"
    path.write_bytes("-7 é".encode("latin-1"))
    watcher = StopFile(str(path))
    assert watcher.value() is None and len(warnings()) == 1
    path.write_bytes(b"1" * 100_000)  # not read whole, and not taken as a step
    _touch_later(path)
    assert watcher.value() is None and len(warnings()) == 2


def test_a_directory_at_the_path_is_reported_once(tmp_path, warnings):
    path = tmp_path / "stop"
    path.mkdir()
    watcher = StopFile(str(path))
    for step in range(1, 6):
        assert watcher.action(step) == 0
        (path / f"f{step}").write_text("x")  # the directory's mtime changes: still one warning
    assert len(warnings()) == 1 and "is a directory" in warnings()[0] and str(path) in warnings()[0]
    for name in os.listdir(path):
        os.remove(path / name)
    path.rmdir()
    path.write_text("-9")
    assert watcher.action(9) == SAVE and len(warnings()) == 1
