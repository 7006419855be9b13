"""Run `python -m internevo_jax.train` in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_attention_heads=4",
    "model.vocab_size=256",
    "model.dtype=torch.float32",
    "data.seq_len=32",
    "data.micro_num=2",
    "data.micro_bsz=1",
    "parallel.zero1=1",
    # 7b_sft.py names a placeholder model folder to start from; these runs start from scratch
    "ckpt.load_ckpt_info=None",
]


def run_train(args: list[str], *, devices: int = 1, cwd: Path | None = None, timeout: int = 300):
    """Run the trainer CLI; returns the CompletedProcess with text stdout/stderr."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "internevo_jax.train", "--launcher", "local", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sets(*overrides: str) -> list[str]:
    """['--set', a, '--set', b, ...]"""
    out: list[str] = []
    for o in overrides:
        out += ["--set", o]
    return out
