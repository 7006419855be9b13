"""Every wait of storage and host agreement ends by its deadline, against real parts: a TCP endpoint
that accepts connections and never answers, an S3 server (moto) stopped with SIGSTOP in the middle of
a run, and a two-process jax.distributed run in which one process never arrives."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from ckpt_helpers import (
    CLI_CONFIG,
    REPO,
    S3_ENV,
    cli_env,
    free_port,
    make_bucket,
    make_state,
    run_cli,
    tiny_config,
)

from internevo_jax.checkpoint import CheckpointError, build_checkpoint_manager, deadlines
from internevo_jax.checkpoint.deadlines import DeadlineExceeded
from internevo_jax.trainer.checkpointing import Checkpointing
from internevo_jax.trainer.state import TrainContext

MARGIN_S = 10.0  # the machine running the tests may be loaded: bounds are the deadline plus this


@contextlib.contextmanager
def silent_endpoint():
    """An endpoint on 127.0.0.1 that never answers: the kernel completes the TCP connections from the
    listening socket's backlog, nothing ever reads the requests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def moto_process():
    """A moto S3 server in its own process (so that SIGSTOP silences it); yields (process, endpoint)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the moto server did not start"
            time.sleep(0.1)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


def _s3_env(monkeypatch, endpoint):
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("s3_probe_timeout_s", 0),
        ("upload_timeout_s", -1),
        ("agreement_timeout_s", float("inf")),
        ("s3_attempts", 0),
    ],
)
def test_deadline_keys_are_checked(key, value):
    from internevo_jax.config import ConfigError

    with pytest.raises(ConfigError, match=f"ckpt.{key}"):
        tiny_config(ckpt={key: value})


def test_silent_endpoint_fails_the_start_within_the_probe_deadline(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(deadlines, "S3_LOG_EVERY_S", 1.0)
    with silent_endpoint() as endpoint:
        _s3_env(monkeypatch, endpoint)
        cfg = tiny_config(
            ckpt=dict(
                save_ckpt_folder="boto3:s3://bucket/run",
                async_upload_tmp_folder=str(tmp_path / "stage"),
                s3_probe_timeout_s=3,
            )
        )
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="internevo_jax"), pytest.raises(CheckpointError) as err:
            build_checkpoint_manager(cfg, str(tmp_path))
        elapsed = time.monotonic() - started
    assert 2.5 < elapsed < 3 + MARGIN_S, elapsed
    message = str(err.value)
    assert endpoint in message and "bucket 'bucket'" in message, message
    assert "did not answer within 3 s (ckpt.s3_probe_timeout_s)" in message, message
    assert "\n" not in message
    waiting = [
        r.getMessage() for r in caplog.records if "still waiting for the S3 endpoint" in r.getMessage()
    ]
    assert waiting and endpoint in waiting[0] and "gives up after 3 s (ckpt.s3_probe_timeout_s)" in waiting[0]
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in caplog.text + message


@pytest.mark.slow
def test_cli_with_a_silent_endpoint_exits_2_within_the_default_probe_deadline(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text(CLI_CONFIG)
    with silent_endpoint() as endpoint:
        env = cli_env({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
        proc = run_cli(
            config,
            tmp_path / "run",
            sets=[
                "ckpt.save_ckpt_folder=boto3:s3://bucket/run",
                f"ckpt.async_upload_tmp_folder={tmp_path / 'stage'}",
            ],
            env=env,
            timeout=240,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error and endpoint in error[0], output[-3000:]
    assert "did not answer within 10 s (ckpt.s3_probe_timeout_s)" in error[0], error
    # the default probe deadline (10 s) is longer than the logging interval (5 s)
    assert "still waiting for the S3 endpoint" in output, output[-3000:]


def test_upload_to_a_stopped_server_is_not_saved_within_its_deadline(monkeypatch, tmp_path, caplog):
    """A moto server stopped with SIGSTOP before a save (it keeps accepting connections, never answers):
    the save ends as NOT saved within ckpt.upload_timeout_s, training goes on, and the next save after
    SIGCONT is complete."""
    monkeypatch.setattr(deadlines, "RETRY_BACKOFF_S", 0.2)
    with moto_process() as (server, endpoint):
        _s3_env(monkeypatch, endpoint)
        make_bucket(endpoint, "deadline")
        cfg = tiny_config(
            ckpt=dict(
                save_ckpt_folder="boto3:s3://deadline/run",
                async_upload=True,
                async_upload_tmp_folder=str(tmp_path / "stage"),
                checkpoint_every=2,
                s3_probe_timeout_s=1,
                s3_read_timeout_s=1,
                s3_attempts=10,
                upload_timeout_s=3,
            )
        )
        state, _, loader = make_state(cfg, perturb=0.1)
        checkpointing = Checkpointing(cfg, str(tmp_path), install_signal_handlers=False)
        manager = checkpointing.manager
        ctx = TrainContext()
        with caplog.at_level(logging.INFO, logger="internevo_jax"):
            try:
                for step in (1, 2):
                    ctx.step = step
                    assert checkpointing.after_step(state, ctx, loader) is False
                manager.wait()
                server.send_signal(signal.SIGSTOP)
                ctx.step = 3
                assert checkpointing.after_step(state, ctx, loader) is False
                ctx.step = 4
                started = time.monotonic()
                assert checkpointing.after_step(state, ctx, loader) is False
                manager.wait()  # reported, not raised
                elapsed = time.monotonic() - started
                assert manager.failed(4)
                ctx.step = 5
                assert checkpointing.after_step(state, ctx, loader) is False  # training goes on
                server.send_signal(signal.SIGCONT)
                ctx.step = 6
                assert checkpointing.after_step(state, ctx, loader) is False
            finally:
                checkpointing.close()
        assert elapsed < 3 + 1 + MARGIN_S, elapsed
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        not_saved = [m for m in errors if "step 4 was NOT saved" in m]
        assert not_saved and "within 3 s (ckpt.upload_timeout_s)" in not_saved[0], errors
        assert endpoint in not_saved[0]
        assert [r.step for r in manager.scan().complete] == [2, 6]


def test_a_save_past_its_deadline_stops_the_run_instead_of_waiting(monkeypatch, tmp_path):
    """The next save (or the end of training) waits for the one in flight at most ckpt.save_timeout_s:
    here its upload is stuck on a frozen server longer than that."""
    monkeypatch.setattr(deadlines, "RETRY_BACKOFF_S", 0.2)
    with moto_process() as (server, endpoint):
        _s3_env(monkeypatch, endpoint)
        make_bucket(endpoint, "slow")
        cfg = tiny_config(
            ckpt=dict(
                save_ckpt_folder="boto3:s3://slow/run",
                async_upload=True,
                async_upload_tmp_folder=str(tmp_path / "stage"),
                checkpoint_every=2,
                s3_probe_timeout_s=1,
                s3_read_timeout_s=1,
                s3_attempts=3,
                save_timeout_s=2,
            )
        )
        state, _, loader = make_state(cfg, perturb=0.1)
        manager = build_checkpoint_manager(cfg, str(tmp_path))
        ctx = TrainContext()
        server.send_signal(signal.SIGSTOP)
        ctx.step = 2
        started = time.monotonic()
        manager.maybe_save(state, ctx, loader)
        job = next(t for t in threading.enumerate() if t.name == "checkpoint-2")
        with pytest.raises(DeadlineExceeded) as err:
            manager.wait()  # as the next save and a stop do
        elapsed = time.monotonic() - started
        manager.finalize()  # returns at once: the stuck save's orbax managers are not waited for
        assert time.monotonic() - started < 2 + MARGIN_S
        job.join(60)  # the upload gives up by itself after its tries
    assert elapsed < 2 + MARGIN_S, elapsed
    message = str(err.value)
    assert "The save of step 2" in message and "within 2 s (ckpt.save_timeout_s)" in message, message
    assert "still uploading to boto3:s3://slow/run/2" in message, message


AGREEMENT_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    import jax
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2, process_id=int(sys.argv[2]))
    from internevo_jax.checkpoint import deadlines, distributed
    from internevo_jax.checkpoint.deadlines import Deadline, DeadlineExceeded
    from internevo_jax.trainer.run_control import RunControl

    deadlines.LOG_EVERY_S = 0.5
    limit = Deadline(2, "ckpt.agreement_timeout_s")
    if jax.process_index() == 1:  # never arrives at either meeting point
        time.sleep(7)
        print("ABSENT DONE", flush=True)
        sys.exit(0)
    calls = {
        "BARRIER": lambda: distributed.barrier("committed_3", limit),
        "POLL": lambda: RunControl(None, catch_signals=False, agreement=limit).poll(3),
    }
    for name, call in calls.items():
        started = time.monotonic()
        try:
            call()
            print(name, "RETURNED", flush=True)
        except DeadlineExceeded as err:
            print(f"{name} {time.monotonic() - started:.1f} {err}", flush=True)
    """
)


def test_a_process_that_never_arrives_ends_the_wait_with_a_named_deadline():
    port = free_port()
    env = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AGREEMENT_SCRIPT, str(port), str(rank)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    text = outputs[0]
    for name in ("BARRIER", "POLL"):
        line = next((x for x in text.splitlines() if x.startswith(f"{name} ")), None)
        assert line is not None and "RETURNED" not in line, text[-3000:]
        elapsed = float(line.split()[1])
        assert 1.5 < elapsed < 2 + MARGIN_S, line
        assert "process 1 did not arrive" in line and "ckpt.agreement_timeout_s" in line, line
    assert "still waiting for the other processes at the checkpoint step 'committed_3'" in text, text[-3000:]
    assert "still waiting for the other processes to agree on a stop or save after step 3" in text
    assert "ABSENT DONE" in outputs[1]
