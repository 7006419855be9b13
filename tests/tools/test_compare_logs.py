"""tools/compare_logs.py: our metrics line and InternEvo's, aligned by step, agree on the lr."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import jax
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.monitor import logger
from internevo_jax.monitor.log_lines import parse_metrics_line, read_metrics_log
from internevo_jax.trainer import fit

ROOT = Path(__file__).resolve().parents[2]
LR, WARMUP_RATIO, SCHEDULE_STEPS, ETA_MIN = 1e-4, 0.5, 6, 1e-5


def load_tool():
    spec = importlib.util.spec_from_file_location("compare_logs", ROOT / "tools" / "compare_logs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def internevo_lr(
    last_epoch: int, base: float, total: int, warmup_ratio: float, eta_min: float = ETA_MIN
) -> float:
    """InternEvo's FineTuneCosineAnnealingWarmupLR (init_steps 0) after `last_epoch` scheduler
    steps, in float64 as PyTorch computes it."""
    warmup = int(total * warmup_ratio)
    if last_epoch < warmup:
        return (last_epoch + 1) / warmup * base
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * (last_epoch - warmup) / (total - warmup))) / 2


def internevo_line(step: int, lr: float, loss: float, grad_norm: float) -> str:
    """One line as InternEvo's record_current_batch_training_metrics writes it: `f"{key}={value} "`
    for every metric, behind its logger's prefix; grad_norm is a dict per parameter group."""
    infos = {
        "tflops": 1.5,
        "step": step,
        "loss": loss,
        "tgs (tokens/gpu/second)": 123.45,
        "tgs/last_tgs_1": 123.45,
        "lr": lr,
        "loss_scale": 65536.0,
        "grad_norm": {"0_default": grad_norm},
        "micro_num": 1,
        "num_consumed_tokens": 16 * (step + 1),
        "inf_nan_skip_batches": 0,
        "adam_beta2": 0.95,
        "fwd_bwd_time": 0.5,
        "acc": 0.1,
        "perplexity": 60.0,
    }
    line = "".join(f"{key}={value} " for key, value in infos.items())
    return f"2024-05-01 10:00:00,000\tINFO pipeline.py:620 in record_current_batch_training_metrics -- {line}"


def test_the_first_line_of_internevo_seed_log_is_the_second_updates_rate():
    # lr 1e-4 with 500 warmup steps: InternEvo's first line shows lr=4.0000000000000003e-07
    assert repr(internevo_lr(1, 1e-4, 50000, 0.01)) == "4.0000000000000003e-07"
    record = parse_metrics_line(internevo_line(0, internevo_lr(1, 1e-4, 50000, 0.01), 11.2, 3.0))
    assert record["step"] == 0 and record["lr"] == 4.0000000000000003e-07
    assert record["tgs (tokens/gpu/second)"] == 123.45 and record["grad_norm"] == 3.0
    assert record["adam_beta2"] == 0.95


def test_parser_reads_our_line_internevo_lines_and_skips_the_rest():
    ours = "2026-12-03 10:00:00 INFO tflops=0.1,step=3,loss=4.5,tgs (tokens/gpu/second)=10.5,lr=2e-05,grad_norm=nan"
    assert parse_metrics_line(ours) == {
        "tflops": 0.1,
        "step": 3,
        "loss": 4.5,
        "tgs (tokens/gpu/second)": 10.5,
        "lr": 2e-05,
        "grad_norm": pytest.approx(math.nan, nan_ok=True),
    }
    two_groups = internevo_line(2, 1e-5, 3.0, 0.0).replace(
        "{'0_default': 0.0}", "{'0_default': 3.0, '1_fp32': 4.0}"
    )
    assert parse_metrics_line(two_groups)["grad_norm"] == 5.0  # the global norm over the groups
    assert parse_metrics_line("2026-12-03 INFO validation: step=4,val/en_loss=3.2") is None
    assert parse_metrics_line("2026-12-03 INFO resuming from the checkpoint of step 4") is None
    # a resumed run logs a step again: the last line wins
    log = [ours, ours.replace("loss=4.5", "loss=4.25")]
    assert read_metrics_log(log)[3]["loss"] == 4.25


@pytest.fixture
def captured_lines():
    lines = []
    handler = logging.Handler()
    handler.emit = lambda rec: lines.append(f"2026-12-03 10:00:00 INFO {rec.getMessage()}")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_our_log_and_internevo_log_of_one_schedule_agree_on_lr_at_every_step(
    tmp_path, captured_lines, capsys
):
    cfg = config_from_dict(
        {
            "model": dict(
                num_attention_heads=2, hidden_size=16, num_layers=1, vocab_size=64, dtype="torch.float32"
            ),
            "data": dict(seq_len=16, micro_num=1, micro_bsz=1, total_steps=SCHEDULE_STEPS),
            "adam": dict(lr=LR),
            "lr_scheduler": dict(total_steps=SCHEDULE_STEPS, warmup_ratio=WARMUP_RATIO, eta_min=ETA_MIN),
            "parallel": dict(zero1=1),
            "run_dir": str(tmp_path / "run"),
        },
        log=lambda *_: None,
    )
    result = fit(cfg, devices=jax.devices()[:1])
    ours = tmp_path / "ours.log"
    ours.write_text("\n".join(captured_lines) + "\n")
    # InternEvo's log of the same schedule: line k shows the lr after k + 1 scheduler steps
    theirs = tmp_path / "internevo.log"
    theirs.write_text(
        "\n".join(
            internevo_line(k, internevo_lr(k + 1, LR, SCHEDULE_STEPS, WARMUP_RATIO), loss, 1.0)
            for k, loss in enumerate(result.losses)
        )
        + "\n"
    )
    tool = load_tool()
    assert tool.main([str(ours), str(theirs), "--max_lr_rtol", "1e-6", "--max_loss_diff", "1e-4"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("\t") for line in out.splitlines()[1:] if not line.startswith("#")]
    assert [int(r[0]) for r in rows] == list(range(SCHEDULE_STEPS))  # both logs start at step=0
    lr_diffs = [float(r[6]) for r in rows]  # step, loss x3, lr x3: the lr's relative difference
    assert max(abs(d) for d in lr_diffs) < 1e-6
    assert f"# {SCHEDULE_STEPS} common steps" in out
    # a schedule one step off (InternEvo's rate of the step itself) is caught
    theirs.write_text(
        "\n".join(
            internevo_line(k, internevo_lr(k, LR, SCHEDULE_STEPS, WARMUP_RATIO), loss, 1.0)
            for k, loss in enumerate(result.losses)
        )
    )
    assert tool.main([str(ours), str(theirs), "--max_lr_rtol", "1e-6"]) == 1
