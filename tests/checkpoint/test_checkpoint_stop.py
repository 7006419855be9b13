"""The stop file and signal handling, in-process."""

from __future__ import annotations

import os
import signal

from ckpt_helpers import make_state, tiny_config

from internevo_jax.checkpoint import StopFile, build_checkpoint_manager
from internevo_jax.checkpoint.stopfile import SAVE, SAVE_AND_EXIT
from internevo_jax.trainer.state import TrainContext


def test_stop_file_values_and_actions(tmp_path):
    path = tmp_path / "stop"
    watcher = StopFile(str(path))
    assert watcher.value() is None and watcher.action(3) == 0  # no file yet
    path.write_text("-3\n")
    assert [watcher.action(s) for s in (2, 3, 4)] == [0, SAVE, 0]
    path.write_text("+15")
    assert watcher.action(15) == SAVE_AND_EXIT
    path.write_text("7")
    assert watcher.action(7) == SAVE_AND_EXIT
    path.write_text("soon")
    assert watcher.value() is None
    path.unlink()
    assert watcher.value() is None


def test_stop_file_is_read_again_only_when_it_changes(tmp_path):
    path = tmp_path / "stop"
    path.write_text("-4")
    watcher = StopFile(str(path))
    assert watcher.value() == -4
    st = os.stat(path)
    path.write_text("-5")  # same size; put the old mtime back: stat sees no change, so no re-read
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    if os.stat(path).st_ino == st.st_ino:
        assert watcher.value() == -4
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert watcher.value() == -5


def test_stop_file_drives_maybe_save(tmp_path):
    stop = tmp_path / "stop"
    cfg = tiny_config(
        ckpt=dict(save_ckpt_folder=str(tmp_path / "ckpts"), checkpoint_every=None, stop_file_path=str(stop))
    )
    state, _, loader = make_state(cfg)
    manager = build_checkpoint_manager(cfg, str(tmp_path), install_signal_handlers=False)
    ctx = TrainContext()
    stop.write_text("-2")
    stops = []
    for step in (1, 2, 3):
        ctx.step = step
        stops.append(manager.maybe_save(state, ctx, loader))
    stop.write_text("4")
    ctx.step = 4
    stops.append(manager.maybe_save(state, ctx, loader))
    manager.finalize()
    assert stops == [False, False, False, True]
    assert [r.step for r in manager.scan().complete] == [2, 4]


def test_sigterm_requests_a_save_and_a_stop(tmp_path):
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=str(tmp_path / "ckpts"), checkpoint_every=None))
    state, _, loader = make_state(cfg)
    before = signal.getsignal(signal.SIGTERM)
    manager = build_checkpoint_manager(cfg, str(tmp_path))
    ctx = TrainContext(step=1)
    try:
        assert manager.maybe_save(state, ctx, loader) is False  # installs the handlers
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        ctx.step = 2
        assert manager.maybe_save(state, ctx, loader) is True
    finally:
        manager.finalize()
    assert signal.getsignal(signal.SIGTERM) is before
    assert [r.step for r in manager.scan().complete] == [2]
