"""benchmarks/train_throughput.py: the real CLI per variant on CPU (--small), and its tolerant readers."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "train_throughput.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_plan_runs_the_cli_and_prints_a_table(tmp_path):
    out = tmp_path / "RESULTS.md"
    command = [sys.executable, str(SCRIPT), "--small", "--only", "mock", "binmeta", "--steps", "4"]
    command += [
        "--workdir",
        str(tmp_path / "work"),
        "--json",
        str(tmp_path / "out.json"),
        "--write",
        str(out),
    ]
    # one CPU device, as on a plain host (the test session's XLA_FLAGS ask for eight)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = load_bench().parse_table(done.stdout)
    assert [r["variant"] for r in rows] == ["mock", "binmeta"]
    for row in rows:
        assert float(row["median step (s)"]) > 0 and float(row["tokens/s/device"]) > 0
        assert row["MFU"] == "n/a"  # no peak FLOP/s for a CPU
    assert load_bench().parse_table(out.read_text()) == rows
    assert "Command: `python benchmarks/train_throughput.py --small" in out.read_text()
    # every variant trained through the CLI in its own run folder, checkpoints included
    for name in ("mock", "binmeta"):
        log = (tmp_path / "work" / name / "train.log").read_text()
        assert "finished at step 4" in log and "checkpoint of step 3 complete" in log
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["steps"] for r in results] == [4, 4] and all(r["timed_steps"] == 3 for r in results)
    assert (tmp_path / "work" / "binmeta_data" / "en" / "synthetic.bin.meta").is_file()


def test_readers_skip_bad_lines_and_show_a_missing_summary_as_na(tmp_path):
    bench = load_bench()
    lines = [
        json.dumps(
            {
                "step": i - 1,  # the metrics line numbers batches from 0
                "fwd_bwd_time": 1.0 + i,
                "tgs (tokens/gpu/second)": 100.0 * i,
                "mfu": None,
                "tflops": 2.0,
            }
        )
        for i in range(1, 5)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join([lines[0], "not json", '{"step": 2}', *lines[1:], "{"]))
    records = bench.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    result = {
        "variant": "v",
        "returncode": 0,
        **bench.summarise(records, bench.read_summary(tmp_path / "none"), 1),
    }
    assert result["median_step_s"] == 4.0 and result["tokens_per_s_per_device"] == 300.0
    row = bench.parse_table("\n".join(bench.table([result])))[0]
    assert (
        row["MFU"] == row["peak memory (GiB)"] == row["compile (s)"] == row["time to first step (s)"] == "n/a"
    )

    summary = {
        "steps": 4,
        "median_step_s": 4.0,
        "compile_s": 12.5,
        "time_to_first_step_s": 20.0,
        "peak_memory_bytes": 3 * 2**30,
        "device_kind": "NVIDIA H200",
        "devices": 1,
    }
    (tmp_path / "run_summary.json").write_text(json.dumps(summary))
    result = {
        "variant": "v",
        "returncode": 0,
        **bench.summarise(records, bench.read_summary(tmp_path / "run_summary.json"), 1),
    }
    row = bench.parse_table("\n".join(bench.table([result])))[0]
    assert (row["peak memory (GiB)"], row["compile (s)"], row["time to first step (s)"]) == (
        "3.0",
        "12.5",
        "20.0",
    )
    assert result["device_kind"] == "NVIDIA H200"
