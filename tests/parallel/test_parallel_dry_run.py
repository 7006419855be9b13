"""`--dry-run`: the 7B config's memory plan on 8 CPU stand-ins, without allocating the model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from internevo_jax.config import ConfigError
from internevo_jax.dry_run import GiB, parse_memory

REPO = Path(__file__).resolve().parents[2]


def dry_run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # the dry run picks its own device count
    cmd = [sys.executable, "-m", "internevo_jax.train", "--dry-run", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def gib(report: str, label: str) -> float:
    return float(re.search(rf"{re.escape(label)}\s+([0-9.]+) GiB", report).group(1))


def test_7b_fits_on_8_devices_of_80gb():
    proc = dry_run("--config", "configs/7b_sft.py", "--devices", "8", "--device-memory", "80GB")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = proc.stdout
    assert "on 8 devices (mesh pipeline=1 data=1 fsdp=8 tensor=1)" in report
    n_params = 6.7e9 + 2 * 103168 * 4096  # InternLM-7B: 32 layers of 4096 wide plus embedding and head
    assert gib(report, "parameters (fp32 master copy)") == pytest.approx(4 * n_params / 8 / GiB, rel=0.03)
    assert gib(report, "optimizer state (AdamW moments)") == pytest.approx(8 * n_params / 8 / GiB, rel=0.03)
    # ZeRO-1: the fp16 compute copy is whole on every device
    assert gib(report, "weights gathered for compute") == pytest.approx(2 * n_params / GiB, rel=0.03)
    assert ": fits (headroom" in report
    assert "scan_layers=True" in report and "scaled to float16" in report


def test_a_plan_that_does_not_fit_exits_1():
    proc = dry_run(
        "--config", "configs/7b_sft.py", "--devices", "4", "--device-memory", "24GiB",
        "--set", "parallel.tensor.size=2", "--set", "parallel.zero1.size=-1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "(mesh pipeline=1 data=1 fsdp=2 tensor=2)" in proc.stdout
    assert "does NOT fit (short by" in proc.stdout


def test_memory_sizes():
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("16GiB") == 16 * 2**30
    assert parse_memory("96e9") == 96 * 10**9
    with pytest.raises(ConfigError, match="not a size like 80GB"):
        parse_memory("lots")
