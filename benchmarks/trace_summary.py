"""Summarise a `--profiling` trace: where the device time goes, and how long the device sat idle.

    python benchmarks/trace_summary.py runs/<job>/profile [--top 15]

Reads the newest `perfetto_trace.json.gz` under the folder (written by the profiler of
`python -m internevo_jax.train --profiling`). Prints the busy time of each thread, the ops that
took the most time on the device threads (grouped by name without the numeric suffix XLA adds:
`fusion.12` and `fusion.7` are one row), and the executions of the compiled step with the gaps
between them: a gap is time the device had nothing queued.

Device threads are those whose name says they run XLA work: GPU streams (`Stream`), TPU cores
(`TPU`), or the CPU client's op threads (`XLAEigen`, `XLAPjRt`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

DEVICE_THREAD = re.compile(r"Stream|TPU|XLAEigen|XLAPjRt", re.IGNORECASE)
# One execution of a compiled program: the CPU client's thunk executor, or XLA's module event on
# GPU and TPU ("XlaModule" / the jit name); the first that occurs is used.
EXECUTION = ("ThunkExecutor::Execute (wait for completion)", "XlaModule", "jit_step")


def newest_trace(folder: str) -> str:
    """The newest perfetto_trace.json.gz under `folder` (a run's profile folder, or the file)."""
    if folder.endswith(".json.gz"):
        return folder
    found = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)
    if not found:
        raise SystemExit(f"no perfetto_trace.json.gz under {folder}: run with --profiling first")
    return max(found, key=os.path.getmtime)


def load_events(path: str) -> tuple[list[dict], dict]:
    """Complete events (ph == "X") and {(pid, tid): thread name}."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    return [e for e in events if e.get("ph") == "X" and "dur" in e], names


def summarise(events: list[dict], names: dict, top: int) -> str:
    """The report as markdown tables."""
    lines = []
    busy = collections.Counter()
    for e in events:
        busy[names.get((e["pid"], e["tid"]), str(e["tid"]))] += e["dur"]
    lines += ["| thread | busy (ms) |", "| --- | --- |"]
    lines += [f"| {name} | {us / 1e3:.1f} |" for name, us in busy.most_common()]

    device = [e for e in events if DEVICE_THREAD.search(names.get((e["pid"], e["tid"]), ""))]
    ops = collections.Counter()
    for e in device:
        if not e["name"].startswith("ThunkExecutor") and not e["name"].startswith("SlinkyThreadPool"):
            ops[re.sub(r"[.\d]+$", "", e["name"])] += e["dur"]
    total = sum(ops.values()) or 1
    lines += ["", "| op (numeric suffix dropped) | time (ms) | share |", "| --- | --- | --- |"]
    lines += [f"| {op} | {us / 1e3:.1f} | {us / total:.1%} |" for op, us in ops.most_common(top)]

    for marker in EXECUTION:
        runs = sorted((e for e in device if e["name"].startswith(marker)), key=lambda e: e["ts"])
        if runs:
            break
    else:
        return "\n".join([*lines, "", "(no step executions found on the device threads)"])
    # the train step is the long program; small ones (a scalar put on the device) are left out.
    # The bar is the lower median of the longer half, so one slow step does not hide the others
    # (with three steps, the plain median of the longer half would be the slowest one).
    longer_half = sorted(e["dur"] for e in runs)[len(runs) // 2 :]
    typical = longer_half[(len(longer_half) - 1) // 2]
    runs = [e for e in runs if e["dur"] >= 0.1 * typical]
    gaps = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(runs, runs[1:])]
    lines += ["", f"Executions of the step (`{marker}`): {len(runs)}", ""]
    lines += ["| # | duration (ms) | device idle before it (ms) |"]
    lines += ["| --- | --- | --- |"]
    for i, run in enumerate(runs):
        gap = f"{gaps[i - 1] / 1e3:.2f}" if i else "-"
        lines.append(f"| {i + 1} | {run['dur'] / 1e3:.1f} | {gap} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a run's profile folder (or a perfetto_trace.json.gz)")
    parser.add_argument("--top", type=int, default=15, help="how many op groups to list")
    args = parser.parse_args(argv)
    path = newest_trace(args.folder)
    events, names = load_events(path)
    print(f"# {path}\n")
    print(summarise(events, names, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
