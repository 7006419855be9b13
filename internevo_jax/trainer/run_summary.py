"""What a run measured about itself: compile time, time to the first step, step times, peak memory.

`fit` logs the summary at the end and writes it to <run_dir>/run_summary.json (process 0), where
benchmarks/train_throughput.py reads it.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax

# jax reports tracing, lowering and XLA compilation under this prefix (jax.monitoring events).
COMPILE_EVENT_PREFIX = "/jax/core/compile/"
SUMMARY_FILE = "run_summary.json"


class RunTimer:
    """Collects compile time (a jax.monitoring listener, while `start`ed) and the step times."""

    def __init__(self):
        self.compile_s = 0.0
        self.started_at: float | None = None
        self.time_to_first_step_s: float | None = None
        self.step_times: list[float] = []
        self._listening = False

    def _on_duration(self, event: str, duration_secs: float, **_) -> None:
        if event.startswith(COMPILE_EVENT_PREFIX):
            self.compile_s += duration_secs

    def start(self) -> None:
        """Start the clock and the compile-time listener."""
        self.started_at = time.perf_counter()
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        self._listening = True

    def stop(self) -> None:
        """Remove the listener (idempotent)."""
        if self._listening:
            jax.monitoring.unregister_event_duration_listener(self._on_duration)
            self._listening = False

    def step_done(self, step_time: float) -> None:
        """Record one trained step's time (its metrics were just read)."""
        if self.time_to_first_step_s is None and self.started_at is not None:
            self.time_to_first_step_s = time.perf_counter() - self.started_at
        self.step_times.append(step_time)

    def summary(self, devices) -> dict:
        """The run's numbers: steps, median step time (the first step, which compiles, left out
        when there are others), compile and first-step times, device 0's peak memory."""
        times = self.step_times[1:] or self.step_times
        return {
            "steps": len(self.step_times),
            "median_step_s": statistics.median(times) if times else None,
            "compile_s": round(self.compile_s, 3),
            "time_to_first_step_s": self.time_to_first_step_s,
            "peak_memory_bytes": peak_memory_bytes(devices[0]),
            "device_kind": devices[0].device_kind,
            "devices": len(devices),
        }


def peak_memory_bytes(device) -> int | None:
    """The device's peak bytes in use so far, where the backend reports it (GPU, TPU; not CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise various errors
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def describe(summary: dict) -> str:
    """One log line for the summary."""
    parts = [f"{summary['steps']} steps"]
    if summary["median_step_s"] is not None:
        parts.append(f"median step {summary['median_step_s']:.4f} s")
    parts.append(f"compile {summary['compile_s']:.1f} s")
    if summary["time_to_first_step_s"] is not None:
        parts.append(f"first step after {summary['time_to_first_step_s']:.1f} s")
    peak = summary["peak_memory_bytes"]
    parts.append(
        f"peak device memory {peak / 2**30:.2f} GiB" if peak is not None else "peak device memory n/a"
    )
    return "run summary: " + ", ".join(parts)


def write_summary(summary: dict, run_dir: str) -> None:
    """Write <run_dir>/run_summary.json atomically."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, SUMMARY_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(path + ".tmp", path)
