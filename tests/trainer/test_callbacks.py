"""Callbacks in real (tiny) runs: what they see, in which order, how they stop a run and add a metric."""

import dataclasses
import json
import logging
import os

import jax
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.config.schema import ProfilerConfig
from internevo_jax.monitor import LINE_KEYS, logger
from internevo_jax.trainer import Callback, fit


def tiny_config(tmp_path, **data):
    return config_from_dict(
        {
            "JOB_NAME": "callbacks",
            "model": dict(
                num_attention_heads=2,
                hidden_size=16,
                num_layers=1,
                vocab_size=64,
                mlp_ratio=2.0,
                dtype="torch.float32",
                use_flash_attn=False,
            ),
            "data": dict(seq_len=16, micro_num=1, micro_bsz=1, valid_micro_num=50, **data),
            "parallel": dict(zero1=1),
            "run_dir": str(tmp_path / "run"),
        },
        log=lambda *_: None,
    )


class Recorder(Callback):
    """Writes down every hook call; optionally stops at a step or adds a metric."""

    def __init__(self, stop_at=None, metric=None):
        self.events, self.records, self.stop_at, self.metric = [], [], stop_at, metric

    def on_train_start(self, run):
        self.events.append(("train_start", run.context.step))

    def on_step_start(self, run, step):
        self.events.append(("step_start", step))

    def add_metrics(self, run, step, record):
        self.events.append(("add_metrics", step))
        if self.metric:
            return {self.metric: step * 0.5}
        return None

    def on_step_end(self, run, step, record):
        self.events.append(("step_end", step))
        self.records.append(dict(record))
        return step == self.stop_at

    def on_step_skipped(self, run, step):
        self.events.append(("step_skipped", step))

    def on_validation(self, run, step, record):
        self.events.append(("validation", step))
        assert record["step"] == step and "val/val_loss" in record

    def on_train_end(self, run):
        self.events.append(("train_end", run.context.step))


def jsonl(run_dir):
    return [json.loads(x) for x in open(f"{run_dir}/metrics.jsonl")]


@pytest.fixture
def log_lines():
    lines = []
    handler = logging.Handler()
    handler.emit = lambda rec: lines.append(rec.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_callback_sees_every_step_record_and_stops_the_run(tmp_path):
    cfg = tiny_config(tmp_path, total_steps=10)
    rec = Recorder(stop_at=3)
    result = fit(cfg, devices=jax.devices()[:1], callbacks=[rec])
    # step 4 was already queued when step 3's record asked to stop: it completes, with its record
    assert result.context.step == 4 and len(result.losses) == 4
    # the records number batches from 0, as InternEvo's line does; hooks count steps done
    assert [r["step"] for r in rec.records] == [0, 1, 2, 3]
    assert [r["loss"] for r in rec.records] == result.losses
    assert list(rec.records[0])[: len(LINE_KEYS)] == list(LINE_KEYS)
    # the writers saw the same records, up to the stop
    assert [r["loss"] for r in jsonl(result.run_dir)] == result.losses
    assert rec.events[-1] == ("train_end", 4)


def test_records_arrive_one_step_late_and_on_state_sees_the_exact_state(tmp_path):
    """The loop queues step N+1 before it reads step N; a callback that asks for the state of a
    step gets it exactly (the update count equals the step), the others see the newest state."""
    seen = {}

    class StateAt2(Callback):
        def wants_state(self, run, step):
            return step == 2

        def on_state(self, run, step):
            seen["on_state"] = (step, int(run.state.update_count), run.context.step)

        def on_step_end(self, run, step, record):
            if step == 1:
                seen["step_end"] = (step, int(run.state.update_count), run.context.step)
                seen["tokens"] = record["num_consumed_tokens"]

    cfg = tiny_config(tmp_path, total_steps=4)
    fit(cfg, devices=jax.devices()[:1], callbacks=[StateAt2()])
    assert seen["step_end"] == (1, 2, 2)  # step 2 was queued before step 1's record
    assert seen["tokens"] == 16  # the record still counts the tokens as of its own step
    assert seen["on_state"] == (2, 2, 2)
    summary = json.load(open(tmp_path / "run" / "run_summary.json"))
    assert summary["steps"] == 4 and summary["devices"] == 1
    assert summary["compile_s"] > 0 and summary["time_to_first_step_s"] >= summary["compile_s"] * 0.5
    assert summary["median_step_s"] > 0


def test_a_callback_metric_reaches_the_line_and_the_jsonl(tmp_path, log_lines):
    cfg = tiny_config(tmp_path, total_steps=2)
    result = fit(cfg, devices=jax.devices()[:1], callbacks=[Recorder(metric="my_metric")])
    lines = [ln for ln in log_lines if ln.startswith("tflops=")]
    assert len(lines) == 2
    keys = [kv.split("=")[0] for kv in lines[1].split(",")]
    assert keys[: len(LINE_KEYS)] == list(LINE_KEYS)
    assert keys[len(LINE_KEYS) :] == [
        "acc",
        "perplexity",
        "mfu",
        "acc/mock",
        "loss/mock",
        "tokens/mock",
        "my_metric",
    ]
    assert lines[1].endswith(",my_metric=1.0")
    assert [r["my_metric"] for r in jsonl(result.run_dir)] == [0.5, 1.0]


def test_hook_order_with_validation_and_skipped_batches(tmp_path):
    cfg = tiny_config(tmp_path, total_steps=4, valid_every=2, skip_batches="2")  # 0-based batch index: step 3
    first, second = Recorder(), Recorder()
    fit(cfg, devices=jax.devices()[:1], callbacks=[first, second])
    assert first.events == second.events
    assert first.events == [
        ("train_start", 0),
        ("step_start", 1),
        ("step_start", 2),  # queued before step 1's record
        ("add_metrics", 1),
        ("step_end", 1),
        ("add_metrics", 2),
        ("step_end", 2),
        ("validation", 2),
        ("step_start", 3),
        ("step_skipped", 3),
        ("step_start", 4),
        ("add_metrics", 4),
        ("step_end", 4),
        ("validation", 4),
        ("train_end", 4),
    ]
    records = jsonl(cfg.run_dir)
    # step lines by batch index (0, 1, 3), validation by steps done (2, 4), as InternEvo numbers them
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert "val/val_loss" in records[2] and list(records[2])[0] == "step"


def test_a_callback_may_not_overwrite_a_metric(tmp_path):
    cfg = tiny_config(tmp_path, total_steps=2)
    ends = Recorder()
    with pytest.raises(ValueError, match="'loss' is already in the record"):
        fit(cfg, devices=jax.devices()[:1], callbacks=[ends, Recorder(metric="loss")])
    assert ends.events[-1] == ("train_end", 2)  # the run still ends cleanly: writers closed, hooks run


def _record_profiler_calls(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda folder, **kw: calls.append(("start", folder)))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: calls.append(("stop",)))
    monkeypatch.setattr(
        jax.profiler, "save_device_memory_profile", lambda path: calls.append(("memory", path))
    )
    return calls


class _Steps(Callback):
    def __init__(self, calls):
        self.calls = calls

    def on_step_start(self, run, step):
        self.calls.append(("step", step))


def test_profiling_traces_steps_6_to_8(tmp_path, monkeypatch):
    calls = _record_profiler_calls(monkeypatch)
    cfg = tiny_config(tmp_path, total_steps=9)
    fit(cfg, devices=jax.devices()[:1], profiling=True, callbacks=[_Steps(calls)])
    # the profiler runs before the user's callbacks: the trace starts ahead of step 6's hooks,
    # and stops once step 8's metrics are read (step 9 is queued by then)
    folder = str(tmp_path / "run" / "profile")
    assert [c for c in calls if c[0] != "step" or 5 <= c[1]] == [
        ("step", 5),
        ("start", folder),
        ("step", 6),
        ("step", 7),
        ("step", 8),
        ("step", 9),
        ("stop",),
        ("memory", os.path.join(folder, "memory.prof")),
    ]


def test_profiling_window_comes_from_the_config(tmp_path, monkeypatch):
    calls = _record_profiler_calls(monkeypatch)
    cfg = tiny_config(tmp_path, total_steps=5)
    cfg = dataclasses.replace(
        cfg,
        monitor=dataclasses.replace(
            cfg.monitor, profiler=ProfilerConfig(skip_steps=1, active_steps=2, memory_profile=False)
        ),
    )
    fit(cfg, devices=jax.devices()[:1], profiling=True, callbacks=[_Steps(calls)])
    folder = str(tmp_path / "run" / "profile")
    # steps 2 and 3 traced; no memory profile
    assert calls == [
        ("step", 1),
        ("start", folder),
        ("step", 2),
        ("step", 3),
        ("step", 4),
        ("stop",),
        ("step", 5),
    ]


def test_callback_list_ends_in_reverse_and_rejects_other_objects():
    from internevo_jax.trainer import CallbackList

    ended = []

    class Named(Callback):
        def __init__(self, name):
            self.name = name

        def on_train_end(self, run):
            ended.append(self.name)
            if self.name == "b":
                raise RuntimeError("b failed")

    with pytest.raises(RuntimeError, match="b failed"):
        CallbackList([Named("a"), Named("b"), Named("c")]).on_train_end(run=None)
    assert ended == ["c", "b", "a"]  # a failure does not keep the others from cleaning up
    with pytest.raises(TypeError, match="is not an internevo_jax.trainer.Callback"):
        CallbackList([object()])


def test_on_exception_reaches_every_callback_and_never_hides_the_error(log_lines):
    from internevo_jax.trainer import CallbackList

    seen = []

    class Watcher(Callback):
        def __init__(self, name):
            self.name = name

        def on_exception(self, run, error):
            seen.append((self.name, str(error)))
            if self.name == "a":
                raise ValueError("a's own bug")

    error = RuntimeError("the run's error")
    CallbackList([Watcher("a"), Watcher("b")]).on_exception(run=None, error=error)  # does not raise
    assert seen == [("a", "the run's error"), ("b", "the run's error")]
    assert any("Watcher.on_exception failed" in line for line in log_lines)
