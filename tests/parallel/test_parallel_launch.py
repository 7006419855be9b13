"""Multi-process launches: the launcher environments, a real 2-process x 2-device CPU run that
matches one 4-device process, and a missing peer that makes every started process fail clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from internevo_jax.parallel import LaunchError, resolve_launch

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
JOB_NAME = "launch_test"
data = dict(seq_len=16, micro_num=2, micro_bsz=1, total_steps=3, valid_every=0)
model = dict(num_attention_heads=4, hidden_size=32, num_layers=2, vocab_size=128, mlp_ratio=2.0,
             multiple_of=32, dtype="torch.float32", use_flash_attn=False)
parallel = dict(zero1=-1)
adam = dict(lr=1e-3)
ckpt = dict(enable_save_ckpt=False)
"""


def test_torchrun_variables():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
        "LOCAL_RANK": "1",
    }
    info = resolve_launch("torch", env=env)
    assert (info.process_id, info.num_processes, info.coordinator) == (3, 4, "10.0.0.1:29500")


def test_slurm_variables():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_NODELIST": "gpu[07-10,12],cpu01"}
    info = resolve_launch("slurm", port=12345, env=env)
    assert (info.process_id, info.num_processes, info.coordinator) == (5, 16, "gpu07:12345")
    # outside an allocation: one process, no coordinator
    assert resolve_launch("slurm", env={}).num_processes == 1


def test_launch_mistakes_are_explained():
    with pytest.raises(LaunchError, match="coordinator address"):
        resolve_launch("torch", env={"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match="RANK='x' is not an integer"):
        resolve_launch("torch", env={"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
    with pytest.raises(LaunchError, match="rank 2 is not inside world size 2"):
        resolve_launch("local", rank=2, world_size=2, host="h")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, name: str, devices: int, extra_env: dict, args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
        **extra_env,
    )
    cmd = [sys.executable, "-m", "internevo_jax.train", "--config", str(tmp_path / "cfg.py")]
    cmd += ["--set", f"run_dir={tmp_path / name}", *args]
    # an outer timeout, as the docs recommend for any multi-process job
    return subprocess.Popen(
        ["timeout", "240", *cmd],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    """2 processes x 4 CPU devices (gloo) on 127.0.0.1, launched through torchrun-style variables,
    == 1 process x 8 devices, step for step."""
    (tmp_path / "cfg.py").write_text(CONFIG)
    port = free_port()
    procs = [
        start(
            tmp_path,
            f"run{rank}",
            4,
            dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"),
            ["--launcher", "torch", "--distributed-timeout", "60"],
        )
        for rank in range(2)
    ]
    single = start(tmp_path, "single", 8, {}, ["--launcher", "local"])
    outs = [p.communicate()[0] for p in (*procs, single)]
    for p, out in zip((*procs, single), outs):
        assert p.returncode == 0, out[-3000:]
    two = losses(tmp_path / "run0")
    assert len(two) == 3
    assert two == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    # only process 0 reports: no metrics line and no metrics file from process 1
    assert "tflops=" in outs[0] and "tflops=" not in outs[1]
    assert not (tmp_path / "run1" / "metrics.jsonl").exists()


def test_missing_peer_fails_every_started_process_within_the_timeout(tmp_path):
    """World size 2, one process started: it exits non-zero with a clear message, on time.

    Both sides are covered: the coordinator (rank 0) waiting for rank 1, and rank 1 (slurm
    variables) waiting for a coordinator that never comes.
    """
    (tmp_path / "cfg.py").write_text(CONFIG)
    timeout_s = 5
    t0 = time.monotonic()
    alone = [
        start(
            tmp_path,
            "rank0",
            4,
            dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="2"),
            ["--launcher", "torch", "--distributed-timeout", str(timeout_s)],
        ),
        start(
            tmp_path,
            "rank1",
            2,
            dict(SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LAUNCH_NODE_IPADDR="127.0.0.1"),
            ["--launcher", "slurm", "--port", str(free_port()), "--distributed-timeout", str(timeout_s)],
        ),
    ]
    outs = [p.communicate()[0] for p in alone]
    elapsed = time.monotonic() - t0
    for rank, (p, out) in enumerate(zip(alone, outs)):
        assert p.returncode == 2, out[-3000:]
        assert f"error: distributed start-up failed for process {rank} of 2" in out
        assert f"after waiting up to {timeout_s} s (--distributed-timeout)" in out
        assert "Check failure stack trace" not in out
    assert elapsed < 60  # start-up + the 5 s timeout, not jax's default 300 s
