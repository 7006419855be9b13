"""XLA flags: the GPU default never overrides the user's XLA_FLAGS; the config's `xla_flags` win and
reach XLA when a run starts (a real process: its CPU device count follows the config)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from internevo_jax.platforms import GPU_DEFAULT_XLA_FLAGS, add_xla_flags

REPO = Path(__file__).resolve().parents[2]


def test_defaults_keep_the_users_value_and_config_flags_replace_it(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d")
    add_xla_flags(GPU_DEFAULT_XLA_FLAGS, keep_existing=True)
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d"
    add_xla_flags(["--xla_gpu_enable_triton_gemm=false", "--xla_gpu_autotune_level=0"], keep_existing=False)
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_dump_to=/tmp/d",
        "--xla_gpu_enable_triton_gemm=false",
        "--xla_gpu_autotune_level=0",
    ]
    monkeypatch.delenv("XLA_FLAGS")
    add_xla_flags(GPU_DEFAULT_XLA_FLAGS, keep_existing=True)
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_enable_triton_gemm=false"


SCRIPT = """
from internevo_jax.initialize import launch_from_config
launch_from_config("configs/demo.py", overrides=["xla_flags=--xla_force_host_platform_device_count=3"])
import jax
print("DEVICES", jax.device_count())
"""


def test_config_xla_flags_reach_xla_in_a_run():
    env = {
        "PATH": "/usr/bin:/bin",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DEVICES 3" in out.stdout
