"""What every benchmark section of RESULTS.md states: the command, the machine, the versions, the date.

import _results                                    # benchmarks/ on sys.path
env = _results.environment()                       # in a process that may start jax's backend
text = _results.section("Title", command, env, notes, table_lines)
_results.append("benchmarks/RESULTS.md", text)

python benchmarks/_results.py                      # environment() as JSON (for a parent process
                                                   # that must not hold the accelerator itself)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import shlex
import sys
from collections.abc import Sequence


def _cuda_versions() -> dict:
    """CUDA runtime and cuDNN versions as jax's CUDA plugin reports them; empty without one."""
    try:
        from jax._src.lib import cuda_versions  # the plugin's version queries (None without CUDA)
    except ImportError:
        return {}
    if cuda_versions is None:
        return {}
    out = {}
    # a version the plugin cannot report is left out
    with contextlib.suppress(Exception):
        v = int(cuda_versions.cuda_runtime_get_version())
        out["cuda"] = f"{v // 1000}.{v % 1000 // 10}"
    with contextlib.suppress(Exception):
        v = int(cuda_versions.cudnn_get_version())
        out["cudnn"] = f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return out


def environment() -> dict:
    """Device kind, platform and count, host, Python, jax/jaxlib (and CUDA/cuDNN when visible)."""
    import jax
    import jaxlib

    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "devices": jax.device_count(),
        "host": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        **_cuda_versions(),
    }


def machine_line(env: dict) -> str:
    """One sentence naming the machine and versions of `env` (from `environment()`)."""
    versions = [
        f"Python {env.get('python', '?')}",
        f"jax {env.get('jax', '?')}",
        f"jaxlib {env.get('jaxlib', '?')}",
    ]
    versions += [f"{name} {env[key]}" for key, name in (("cuda", "CUDA"), ("cudnn", "cuDNN")) if env.get(key)]
    return (
        f"Machine: {env.get('device_kind', '?')} ({env.get('platform', '?')}) x{env.get('devices', '?')}, "
        f"host {env.get('host', '?')}; {', '.join(versions)}."
    )


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """`python <script> <args>` as typed (argv None: this process's own arguments)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", script, *args])


def section(title: str, command: str, env: dict, notes: Sequence[str], table: Sequence[str]) -> str:
    """A RESULTS.md section: `## title (date)`, the command, the machine line and notes, the table."""
    lines = [f"## {title} ({datetime.date.today().isoformat()})", "", f"Command: `{command}`", ""]
    lines.append(" ".join([machine_line(env), *notes]))
    return "\n".join([*lines, "", *table]) + "\n"


def append(path: str, text: str) -> None:
    """Append a section to a results file, a blank line before it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text)


if __name__ == "__main__":
    print(json.dumps(environment()))
