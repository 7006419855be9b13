"""`python -m internevo_jax.train` end to end: InternEvo's 7B config trains with overridden dims."""

import json

from cli_helpers import REPO, TINY, run_train, sets

from internevo_jax.monitor import LINE_KEYS


def test_7b_sft_config_trains_with_overridden_dims(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        [
            "--config",
            str(REPO / "configs/7b_sft.py"),
            "--seed",
            "7",
            *sets(*TINY, "data.total_steps=3", f"run_dir={run_dir}"),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    lines = [ln for ln in log.splitlines() if "tflops=" in ln]
    assert len(lines) == 3
    # InternEvo's keys in InternEvo's order, then our extras
    keys = [kv.split("=")[0] for kv in lines[0].split(" INFO ", 1)[1].split(",")]
    assert keys[: len(LINE_KEYS)] == list(LINE_KEYS)
    assert keys[len(LINE_KEYS) :] == ["acc", "perplexity", "mfu", "acc/mock", "loss/mock", "tokens/mock"]
    # PyTorch-only keys are reported once, as one line
    assert log.count("have no effect in JAX") == 1
    assert "cudnn_benchmark" in log

    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]  # InternEvo numbers its lines from 0
    assert records[-1]["num_consumed_tokens"] == 3 * 2 * 32  # steps x micro_num x packed_length x dp
    assert records[0]["micro_num"] == 2
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["model"]["num_layers"] == 2
    assert resolved["model"]["hidden_size"] == 64
    assert resolved["data"]["packed_length"] == 32
    assert resolved["seed"] == 7
    assert resolved["job_name"] == "7b_train"


def test_data_parallel_run_on_8_devices(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        [
            "--config",
            str(REPO / "configs/7b_sft.py"),
            *sets(*TINY, "data.total_steps=2", "parallel.zero1=8", f"run_dir={run_dir}"),
        ],
        devices=8,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'fsdp': 8" in proc.stdout + proc.stderr
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["num_consumed_tokens"] == 2 * 2 * 32 * 8
