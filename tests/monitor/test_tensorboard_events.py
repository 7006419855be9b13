"""TensorBoard event files of real runs, read back with TensorBoard's own reader; the progress bar."""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import jax
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from internevo_jax.config import config_from_dict
from internevo_jax.monitor import TGS_KEY, logger, metric_writers, tensorboard_folder
from internevo_jax.monitor.progress import ProgressBar
from internevo_jax.trainer import Callback, fit


def tiny_config(tmp_path, total_steps, **top):
    return config_from_dict(
        {
            "JOB_NAME": "tb",
            "model": dict(
                num_attention_heads=2,
                hidden_size=16,
                num_layers=1,
                vocab_size=64,
                mlp_ratio=2.0,
                dtype="torch.float32",
                use_flash_attn=False,
            ),
            "data": dict(seq_len=16, micro_num=1, micro_bsz=1, total_steps=total_steps),
            "parallel": dict(zero1=1),
            "ckpt": dict(save_ckpt_folder=str(tmp_path / "ckpts"), checkpoint_every=3, auto_resume=True),
            "monitor": dict(tensorboard=dict(queue_max_length=2)),
            "run_dir": str(tmp_path / "run"),
            **top,
        },
        log=lambda *_: None,
    )


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, run, step, record):
        if step == self.step:
            raise RuntimeError("simulated crash")


def scalars(folder: str, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(folder)  # purges what a restart marker says was trained again
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def jsonl_records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_scalars_at_their_steps_across_a_resume_with_no_duplicates(tmp_path):
    devices = jax.devices()[:1]
    # the first run crashes after step 5; its last checkpoint is step 3, so steps 4 and 5 are trained again
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tiny_config(tmp_path, 6), devices=devices, callbacks=[CrashAt(5)])
    first = jsonl_records(str(tmp_path / "run"))
    assert [r["step"] for r in first] == [0, 1, 2, 3, 4]
    fit(tiny_config(tmp_path, 6), devices=devices)
    records = jsonl_records(str(tmp_path / "run"))[len(first) :]
    assert [r["step"] for r in records] == [3, 4, 5]  # resumed from the checkpoint after 3 steps

    folder = str(tmp_path / "run" / "tensorboard")
    assert len([f for f in os.listdir(folder) if f.startswith("events.out.tfevents")]) == 2
    # TensorBoard steps are steps done (the line's step + 1); each appears once, with the value
    # of the run that trained it last
    expected = {r["step"] + 1: r for r in first[:3] + records}
    for key, tag in [(k, k) for k in ("loss", "lr", "grad_norm", "loss_scale", "num_consumed_tokens")] + [
        (TGS_KEY, "tgs")
    ]:
        got = scalars(folder, tag)
        assert [step for step, _ in got] == [1, 2, 3, 4, 5, 6], tag
        for step, value in got:
            assert value == pytest.approx(expected[step][key], rel=1e-6), (tag, step)
    assert "mfu" not in _tags(folder)  # unknown on CPU (NaN): left out
    # the steps trained twice differ between the runs only if the data or state did: they must not
    assert [r["loss"] for r in records[:2]] == pytest.approx([r["loss"] for r in first[3:5]], rel=1e-6)
    events = EventAccumulator(folder)
    events.Reload()
    assert {"job_name/text_summary", "config/text_summary", "cmd/text_summary"} <= set(
        events.Tags()["tensors"]
    )


def test_tensorboard_folder_key_and_enable_tb(tmp_path):
    cfg = tiny_config(tmp_path, 2, tensorboard_folder=str(tmp_path / "tb"))
    assert tensorboard_folder(cfg, "ignored") == str(tmp_path / "tb")
    fit(cfg, devices=jax.devices()[:1])
    assert [s for s, _ in scalars(str(tmp_path / "tb"), "loss")] == [1, 2]
    assert not os.path.exists(tmp_path / "run" / "tensorboard")

    off = tiny_config(tmp_path / "off", 2, enable_tb=False)
    writers = metric_writers(off, str(tmp_path / "off"), done_steps=0, last_step=2, devices=1)
    assert [type(w).__name__ for w in writers] == ["LineWriter", "JsonlWriter"]
    for w in writers:
        w.close()


def test_resume_tb_folder_copies_the_earlier_events_once(tmp_path):
    fit(tiny_config(tmp_path / "a", 2), devices=jax.devices()[:1])
    earlier = str(tmp_path / "a" / "run" / "tensorboard")
    cfg = tiny_config(tmp_path / "b", 2, resume_tb_folder=earlier)
    run_dir = str(tmp_path / "b" / "run")
    for _ in range(2):  # a restart does not copy again
        for w in metric_writers(cfg, run_dir, done_steps=2, last_step=4, devices=1):
            w.close()
    events = [f for f in os.listdir(os.path.join(run_dir, "tensorboard")) if f.startswith("events")]
    assert len(events) == 3  # one copied, one per start
    assert [s for s, _ in scalars(os.path.join(run_dir, "tensorboard"), "loss")] == [1, 2]


def test_queue_max_length_holds_steps_until_written(tmp_path):
    from internevo_jax.monitor.tensorboard import TensorBoardWriter

    folder = str(tmp_path / "tb")
    writer = TensorBoardWriter(folder, first_step=1, queue_max_length=3)
    for step in range(2):
        writer.write({"step": step, "loss": 1.0 + step, "mfu": float("nan"), "ok": True})
    assert writer.held == [("loss", 1.0, 1), ("loss", 2.0, 2)]  # NaN and flags are not curves
    writer.write({"step": 2, "loss": 3.0})
    assert writer.held == []  # the third step hands all three to the event file
    writer.write({"step": 3, "val/demo_loss": 2.5}, kind="validation")
    writer.close()
    assert scalars(folder, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert scalars(folder, "val/demo_loss") == [(3, 2.5)]


def _tags(folder):
    events = EventAccumulator(folder)
    events.Reload()
    return events.Tags()["scalars"]


def test_progress_bar_shows_steps_eta_tokens_and_loss(monkeypatch):
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150, color_system=None)
    original = logging.StreamHandler(sys.__stderr__)
    monkeypatch.setattr(logger, "handlers", [original])
    bar = ProgressBar(done=2, total=10, devices=4, console=console)
    assert original.stream is not sys.__stderr__  # log lines go through the bar's console meanwhile
    bar.write({"step": 2, "loss": 2.34567, TGS_KEY: 1000.0})
    bar.write({"step": 3, "loss": 2.25, TGS_KEY: 1250.0})
    bar.write({"step": 3, "val/x_loss": 9.0}, kind="validation")  # not a step
    bar.close()
    text = out.getvalue()
    assert "4/10" in text and "ETA" in text
    assert "5,000 tokens/s" in text and "loss 2.2500" in text
    assert original.stream is sys.__stderr__  # restored


def test_progress_bar_off_when_stdout_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    auto = tiny_config(tmp_path, 2, enable_tb=False)
    names = [
        type(w).__name__ for w in metric_writers(auto, str(tmp_path), done_steps=0, last_step=2, devices=1)
    ]
    assert "ProgressBar" not in names
    forced = tiny_config(tmp_path, 2, enable_tb=False, monitor=dict(progress_bar=True))
    writers = metric_writers(forced, str(tmp_path), done_steps=0, last_step=2, devices=1)
    assert "ProgressBar" in [type(w).__name__ for w in writers]
    for w in writers:
        w.close()


def test_config_text_hides_webhook_secrets(tmp_path):
    secret = "http://127.0.0.1:9/open-apis/bot/v2/hook/SECRET-TOKEN?sign=abc"
    cfg = tiny_config(tmp_path, 2, monitor=dict(alert=dict(webhook_address=secret)))
    for w in metric_writers(cfg, str(tmp_path / "run"), done_steps=0, last_step=2, devices=1):
        w.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "webhook_address" in text and "http://127.0.0.1:9/…" in text
    assert "SECRET" not in text and "sign=" not in text
