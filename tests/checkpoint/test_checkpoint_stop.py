"""The stop file and signal handling, in-process."""

from __future__ import annotations

import os
import signal

from ckpt_helpers import make_state, tiny_config

from internevo_jax.trainer.checkpointing import Checkpointing
from internevo_jax.trainer.run_control import SAVE, SAVE_AND_EXIT, StopFile
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


def test_stop_file_drives_after_step(tmp_path):
    stop = tmp_path / "stop"
    cfg = tiny_config(
        ckpt=dict(save_ckpt_folder=str(tmp_path / "ckpts"), checkpoint_every=None, stop_file_path=str(stop))
    )
    state, _, loader = make_state(cfg)
    checkpointing = Checkpointing(cfg, str(tmp_path), install_signal_handlers=False)
    manager = checkpointing.manager
    ctx = TrainContext()
    stop.write_text("-2")
    stops = []
    for step in (1, 2, 3):
        ctx.step = step
        stops.append(checkpointing.after_step(state, ctx, loader))
    stop.write_text("4")
    ctx.step = 4
    stops.append(checkpointing.after_step(state, ctx, loader))
    checkpointing.close()
    assert stops == [False, False, False, True]
    assert [r.step for r in manager.scan().complete] == [2, 4]


def test_sigterm_requests_a_save_and_a_stop(tmp_path):
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=str(tmp_path / "ckpts"), checkpoint_every=None))
    state, _, loader = make_state(cfg)
    before = signal.getsignal(signal.SIGTERM)
    checkpointing = Checkpointing(cfg, str(tmp_path))
    manager = checkpointing.manager
    ctx = TrainContext(step=1)
    try:
        assert checkpointing.after_step(state, ctx, loader) is False  # installs the handlers
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        ctx.step = 2
        assert checkpointing.after_step(state, ctx, loader) is True
    finally:
        checkpointing.close()
    assert signal.getsignal(signal.SIGTERM) is before
    assert [r.step for r in manager.scan().complete] == [2]


def test_run_control_turns_the_stop_file_into_requests(tmp_path):
    from internevo_jax.checkpoint import Request
    from internevo_jax.trainer.run_control import RunControl

    stop = tmp_path / "stop"
    control = RunControl(str(stop), catch_signals=False)
    assert control.poll(1).request == Request.NONE and control.poll(1).reason == "schedule"
    stop.write_text("-2")
    poll = control.poll(2)
    assert (poll.request, poll.reason, poll.exit) == (Request.SAVE, "stop file", False)
    stop.write_text("+3")
    poll = control.poll(3)
    assert (poll.request, poll.exit, poll.asked_by) == (Request.SAVE_AND_EXIT, True, f"stop file {stop}")
    control.close()
