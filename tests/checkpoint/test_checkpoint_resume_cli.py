"""End to end through `python -m internevo_jax.train`: killed runs resume exactly, stop file, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from ckpt_helpers import (
    CLI_CONFIG,
    REPO,
    S3_ENV,
    cli_command,
    cli_env,
    losses,
    make_bucket,
    run_cli,
    start_cli,
    wait_for_step,
)

from internevo_jax.checkpoint import MARKER
from internevo_jax.data import write_bin

TOTAL = 12


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "ckpt_cli.py"
    path.write_text(CLI_CONFIG)
    return path


@pytest.fixture(scope="module")
def binmeta_folder(tmp_path_factory):
    """A small tokenized corpus in InternEvo's layout: train/<type>/<name>.bin + .bin.meta."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    for kind, count in (("en", 300), ("code", 200)):
        samples = [rng.integers(3, 512, size=int(rng.integers(20, 400))).tolist() for _ in range(count)]
        os.makedirs(root / "train" / kind)
        write_bin(root / "train" / kind / "part0.bin", samples)
    return root / "train"


def _data_sets(data, binmeta_folder):
    return [f"data.train_folder={binmeta_folder}"] if data == "binmeta" else []


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


_REFERENCES: dict = {}


def _reference(data, config_file, binmeta_folder, tmp_root, env):
    """Losses of an uninterrupted run with checkpointing off (computed once per data kind)."""
    if data not in _REFERENCES:
        run_dir = tmp_root / f"reference_{data}"
        _ok(
            run_cli(
                config_file,
                run_dir,
                ["ckpt.enable_save_ckpt=False", *_data_sets(data, binmeta_folder)],
                env=env,
            )
        )
        _REFERENCES[data] = losses(run_dir)
        assert sorted(_REFERENCES[data]) == list(range(1, TOTAL + 1))
    return _REFERENCES[data]


def _complete_steps(folder):
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit() and os.path.exists(folder / n / MARKER))


@pytest.mark.parametrize("data", ["mock", pytest.param("binmeta", marks=pytest.mark.slow)])
def test_killed_run_resumes_exactly(data, config_file, binmeta_folder, jax_cache_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"kill_{data}")
    env = cli_env(cache_dir=jax_cache_dir)
    reference = _reference(data, config_file, binmeta_folder, tmp_path_factory.getbasetemp(), env)
    run_dir = tmp / "run"
    sets = ["ckpt.checkpoint_every=4", *_data_sets(data, binmeta_folder)]

    proc = start_cli(config_file, run_dir, sets, env=env)
    last = wait_for_step(run_dir, proc, 9)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 9 <= last < TOTAL, f"the run was not stopped between steps 9 and {TOTAL} (last step seen: {last})"
    saved = _complete_steps(run_dir / "checkpoints")
    assert 4 in saved and max(saved) <= 8

    out = _ok(run_cli(config_file, run_dir, sets, env=env))
    assert f"resuming from the checkpoint of step {max(saved)}" in out
    got = losses(run_dir)
    for step in range(max(saved) + 1, TOTAL + 1):
        assert got[step] == reference[step], f"step {step}: resumed loss {got[step]} != {reference[step]}"
    assert _complete_steps(run_dir / "checkpoints")[-1] == TOTAL


@pytest.mark.slow
def test_killed_run_resumes_exactly_from_s3(
    config_file, binmeta_folder, jax_cache_dir, s3_endpoint, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("kill_s3")
    make_bucket(s3_endpoint, "cli-runs")
    env = cli_env({**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}, cache_dir=jax_cache_dir)
    reference = _reference("mock", config_file, binmeta_folder, tmp_path_factory.getbasetemp(), env)
    run_dir = tmp / "run"
    sets = [
        "ckpt.checkpoint_every=4",
        "ckpt.save_ckpt_folder=boto3:s3://cli-runs/exp1",
        f"ckpt.async_upload_tmp_folder={tmp / 'staging'}",
        "ckpt.async_upload=True",
    ]
    proc = start_cli(config_file, run_dir, sets, env=env)
    last = wait_for_step(run_dir, proc, 9)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 9 <= last < TOTAL, f"the run was not stopped between steps 9 and {TOTAL} (last step seen: {last})"
    out = _ok(run_cli(config_file, run_dir, sets, env=env))
    assert "resuming from the checkpoint of step" in out and "boto3:s3://cli-runs/exp1/" in out
    resumed_from = int(out.split("resuming from the checkpoint of step ")[1].split()[0])
    assert resumed_from in (4, 8)
    got = losses(run_dir)
    assert [got[s] for s in range(resumed_from + 1, TOTAL + 1)] == [
        reference[s] for s in range(resumed_from + 1, TOTAL + 1)
    ]
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in out


def test_stop_file_save_and_continue_then_save_and_exit(
    config_file, binmeta_folder, jax_cache_dir, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("stopfile")
    env = cli_env(cache_dir=jax_cache_dir)
    reference = _reference("mock", config_file, binmeta_folder, tmp_path_factory.getbasetemp(), env)
    stop = tmp / "stop"

    stop.write_text("-3\n")  # save at step 3 and go on
    run_a = tmp / "a"
    _ok(run_cli(config_file, run_a, ["ckpt.checkpoint_every=None", f"ckpt.stop_file_path={stop}"], env=env))
    assert max(losses(run_a)) == TOTAL
    assert _complete_steps(run_a / "checkpoints") == [3, TOTAL]

    stop.write_text("+5\n")  # save at step 5 and exit
    run_b = tmp / "b"
    out = _ok(
        run_cli(config_file, run_b, ["ckpt.checkpoint_every=None", f"ckpt.stop_file_path={stop}"], env=env)
    )
    assert max(losses(run_b)) == 5 and "stop file" in out
    assert _complete_steps(run_b / "checkpoints") == [5]

    stop.write_text("0")
    _ok(run_cli(config_file, run_b, ["ckpt.checkpoint_every=None", f"ckpt.stop_file_path={stop}"], env=env))
    got = losses(run_b)
    assert [got[s] for s in range(6, TOTAL + 1)] == [reference[s] for s in range(6, TOTAL + 1)]


def test_sigterm_saves_and_exits_cleanly(config_file, jax_cache_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sigterm")
    env = cli_env(cache_dir=jax_cache_dir)
    run_dir = tmp / "run"
    proc = start_cli(config_file, run_dir, ["ckpt.checkpoint_every=None"], env=env, log_path=tmp / "log")
    last = wait_for_step(run_dir, proc, 3)
    assert proc.poll() is None, f"the run ended before it could be signalled (last step {last})"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, (tmp / "log").read_text()[-3000:]
    stopped_at = max(losses(run_dir))
    assert stopped_at < TOTAL
    assert _complete_steps(run_dir / "checkpoints") == [stopped_at]
    assert f"received SIGTERM: saved the checkpoint of step {stopped_at}" in (tmp / "log").read_text()


# Runs the CLI with the commit marker of step 8 held back: orbax has finished writing 8/, the marker
# is not there yet, which is the moment a SIGKILL leaves the most convincing half-written checkpoint.
_HOLD_MARKER = """
import runpy, sys, time
from internevo_jax.checkpoint import manager

_marker_text = manager.marker_text

def held(step, slot, items):
    if step == 8:
        print("HOLDING THE MARKER OF STEP 8", flush=True)
        time.sleep(600)
    return _marker_text(step, slot, items)

manager.marker_text = held
sys.argv[0] = "internevo_jax.train"
runpy.run_module("internevo_jax.train", run_name="__main__", alter_sys=True)
"""


def test_sigkill_during_async_save_resumes_from_previous_complete(
    config_file, jax_cache_dir, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("kill_mid_save")
    launcher = tmp / "hold_marker.py"
    launcher.write_text(_HOLD_MARKER)
    env = cli_env(cache_dir=jax_cache_dir)
    run_dir = tmp / "run"
    sets = ["ckpt.checkpoint_every=4"]
    cmd = [str(a) for a in cli_command(config_file, run_dir, sets)]
    cmd[1:3] = [str(launcher)]  # python hold_marker.py <the CLI's arguments>
    log_path = tmp / "first.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        folder = run_dir / "checkpoints"
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            text = log_path.read_text()
            if "HOLDING THE MARKER OF STEP 8" in text and (folder / "8").is_dir():
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    text = log_path.read_text()
    assert "saving checkpoint of step 8" in text, text[-3000:]
    assert (folder / "8").is_dir() and not (folder / "8" / MARKER).exists()
    assert _complete_steps(folder) == [4]

    out = _ok(run_cli(config_file, run_dir, sets, env=env))
    assert f"ignoring the half-written checkpoint at local:{folder / '8'}" in out, out[-3000:]
    assert "resuming from the checkpoint of step 4" in out
    assert "a half-written checkpoint exists" in out  # the new save of step 8 replaces the leftover
    assert _complete_steps(folder) == [4, 8, 12]
    assert sorted(losses(run_dir)) == list(range(1, TOTAL + 1))
