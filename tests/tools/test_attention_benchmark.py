"""benchmarks/attention.py runs its small case on CPU and writes a checked table."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_small_case_runs_and_writes_its_table(tmp_path):
    spec = importlib.util.spec_from_file_location("attention_benchmark", ROOT / "benchmarks" / "attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "RESULTS.md"
    assert (
        bench.main(["--small", "--seq_len", "256", "--iters", "1", "--repeats", "1", "--write", str(out)])
        == 0
    )
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| 256 |")]
    backends = {row[2] for row in rows}
    assert {"xla", "pallas_gpu (interpret)"} <= backends
    assert len(rows) == 3 * len(backends)  # unpacked + two packed patterns, every backend
    for row in rows:
        assert float(row[3]) > 0 and float(row[6].rstrip(" |")) < 1e-4  # timed, and correct vs xla


def test_useful_flops_count_only_visible_pairs():
    spec = importlib.util.spec_from_file_location("attention_benchmark", ROOT / "benchmarks" / "attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seg = bench.segment_ids([1024, 512, 1536, 1024], 4096, 2)
    assert seg.shape == (2, 4096) and len(set(seg[0].tolist())) == 4
    pairs = sum(n * (n + 1) / 2 for n in (1024, 512, 1536, 1024))
    assert bench.useful_flops(seg, 2, 4096, 16, 128) == 3.5 * 4 * 2 * pairs * 16 * 128
    assert bench.useful_flops(None, 2, 4096, 16, 128) == 3.5 * 4 * 2 * 4096 * 4097 / 2 * 16 * 128
    assert bench.segment_ids([2048, 1000, 1048], 8192, 1)[0].max() == 6  # the pattern repeats
