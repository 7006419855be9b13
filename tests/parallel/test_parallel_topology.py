"""TPU topologies on a host without TPUs: quiet CPU start-up, abstract devices, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from internevo_jax import platforms
from internevo_jax.config import ConfigError
from internevo_jax.parallel.topology import topology_devices

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("libtpu", reason="TPU topologies need libtpu (the test extra installs it)")

START = """
import os, jax, internevo_jax
from internevo_jax.parallel.topology import topology_devices
print(os.environ["JAX_PLATFORMS"], jax.devices()[0].platform)
print("libtpu loaded" if "libtpu.so" in open("/proc/self/maps").read() else "libtpu not loaded")
devices = topology_devices("v5p:2x2x1")
print(len(devices), devices[0].device_kind)
"""


@pytest.mark.skipif(
    platforms._present(platforms.GPU_NODES + platforms.TPU_NODES),
    reason="checks the start-up of a host without GPU or TPU device nodes; this host has one",
)
def test_cpu_host_starts_quietly_and_still_compiles_for_tpus():
    # A clean environment, as a user's shell has it: jax imported before the package, as tests do.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TPU_", "ALLOW_MULTIPLE_LIBTPU"))}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", START], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["cpu cpu", "libtpu not loaded", "4 TPU v5"]
    assert proc.stderr == ""  # no libtpu host-discovery warnings, neither at start nor at the compile


def test_user_choices_win(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "")
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v6e-8")
    monkeypatch.setattr(platforms, "_present", lambda patterns: False)
    platforms.configure_host_platforms()
    assert os.environ["JAX_PLATFORMS"] == "" and os.environ["TPU_ACCELERATOR_TYPE"] == "v6e-8"
    assert os.environ["ALLOW_MULTIPLE_LIBTPU_LOAD"] == "1"


def test_tpu_host_is_left_alone(monkeypatch):
    for key in (*platforms.TOPOLOGY_ONLY_LIBTPU_ENV, "JAX_PLATFORMS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(platforms, "_present", lambda patterns: patterns == platforms.TPU_NODES)
    platforms.configure_host_platforms()
    assert not {*platforms.TOPOLOGY_ONLY_LIBTPU_ENV, "JAX_PLATFORMS"} & set(os.environ)


def test_topology_devices():
    devices = topology_devices("v5e:2x4")
    assert len(devices) == 8 and {d.platform for d in devices} == {"tpu"}
    assert devices[0].device_kind == "TPU v5 lite"


@pytest.mark.parametrize(
    "name, says",
    [
        ("", "not a TPU topology name"),
        ("v5p-64", "not a TPU topology name"),
        ("v9:2x2", "Invalid TPU external name"),
        ("v5e:3x3", "not divisible"),
    ],
)
def test_bad_names_are_config_errors(name, says):
    with pytest.raises(ConfigError, match=f"--topology={name!r}") as err:
        topology_devices(name)
    assert says in str(err.value) and "e.g. v5e:2x2" in str(err.value) and "\n" not in str(err.value)
