"""Alerts from real (tiny) training runs: every destination, a stalled run, a crashed run, and
training speed and process exit while the destinations are slow or down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.trainer import Callback, fit

REPO = Path(__file__).resolve().parents[2]
SECRET = "tok3n-s3cr3t"
MODEL = dict(
    num_attention_heads=2,
    hidden_size=16,
    num_layers=1,
    vocab_size=64,
    mlp_ratio=2.0,
    dtype="torch.float32",
    use_flash_attn=False,
)


def tiny_config(tmp_path, alert: dict, total_steps: int = 6):
    return config_from_dict(
        {
            "JOB_NAME": "alerts",
            "model": MODEL,
            "data": dict(seq_len=16, micro_num=1, micro_bsz=1, total_steps=total_steps),
            "parallel": dict(zero1=1),
            "ckpt": dict(enable_save_ckpt=False),
            "enable_tb": False,
            "monitor": dict(alert=alert),
            "run_dir": str(tmp_path / "run"),
        },
        log=lambda *_: None,
    )


def overflow_at(batch_index: int):
    """A grad_hook that makes the gradients of one step infinite (the update is skipped)."""

    def hook(grads, step):
        return jax.tree.map(lambda g: jnp.where(step == batch_index, jnp.inf, g), grads)

    return hook


@pytest.fixture
def no_job_id(monkeypatch):
    for name in ("SLURM_JOB_ID", "KUBERNETES_POD_NAME", "MLP_TASK_INSTANCE_ID"):
        monkeypatch.delenv(name, raising=False)


def test_a_run_alerts_every_destination(tmp_path, http_server, package_log, no_job_id):
    server = http_server()
    alert_file = tmp_path / "alerts" / "alerts.log"
    cfg = tiny_config(
        tmp_path,
        dict(
            enable_feishu_alert=True,
            feishu_alert_address=f"{server.url}/feishu/{SECRET}",
            light_monitor_address=f"{server.url.removeprefix('http://')}/beat",
            alert_file_path=str(alert_file),
            webhook_address=f"{server.url}/hook?token={SECRET}",
            heartbeat_interval_s=0,
        ),
    )
    result = fit(cfg, devices=jax.devices()[:1], grad_hook=overflow_at(2))
    # fit waits (briefly) for the queued alerts at its end
    hook = server.bodies(f"/hook?token={SECRET}")
    assert [(a["kind"], a["step"]) for a in hook] == [("start", 0), ("overflow", 2), ("finish", 5)]
    assert hook[0]["message"].startswith("Training in ") and hook[0]["message"].endswith(" is starting.")
    assert "skip parameter update at step 2" in hook[1]["message"]
    assert "completed (6 steps done)" in hook[2]["message"]
    assert all(a["job_name"] == "alerts" and a["process"] == 0 for a in hook)

    feishu = server.bodies(f"/feishu/{SECRET}")
    assert [m["content"]["post"]["zh_cn"]["title"] for m in feishu] == ["none_alerts"] * 3
    assert [m["content"]["post"]["zh_cn"]["content"][0][0]["text"] for m in feishu] == [
        a["message"] for a in hook
    ]
    assert all(m["msg_type"] == "post" and isinstance(m["timestamp"], int) for m in feishu)

    assert [json.loads(line) for line in alert_file.read_text().splitlines()] == hook

    beats = server.bodies("/beat")
    assert [b["step"] for b in beats] == list(range(6))  # heartbeat_interval_s=0: every step
    assert [b["loss"] for b in beats] == pytest.approx(result.losses)
    assert all(b["msg_type"] == "train_metrics" and "tgs" in b for b in beats)
    assert [b["inf_nan_skip_batches"] for b in beats] == [0, 0, 1, 1, 1, 1]

    assert f"Feishu webhook {server.url}/…" in package_log.text
    assert SECRET not in package_log.text


STALL_S = 2.5


class StallThenCrash(Callback):
    def on_step_end(self, run, step, record):
        if step == 2:
            time.sleep(STALL_S)  # the stalled step: longer than monitor.alert.hang_timeout_s
        if step == 4:
            raise RuntimeError("boom at step 4")


def test_a_stalled_then_crashing_run_alerts_the_hang_once_and_the_exception(
    tmp_path, http_server, package_log
):
    server = http_server()
    cfg = tiny_config(tmp_path, dict(webhook_address=f"{server.url}/hook", hang_timeout_s=1.0), total_steps=8)
    with pytest.raises(RuntimeError, match="boom at step 4"):
        fit(cfg, devices=jax.devices()[:1], callbacks=[StallThenCrash()])
    alerts = server.bodies("/hook")
    assert [a["kind"] for a in alerts] == ["start", "hang", "resumed", "exception"]  # no "finish"
    hang, resumed, crash = alerts[1:]
    assert hang["step"] == 1 and "Training may be in stuck status" in hang["message"]
    assert "after a stall of" in resumed["message"]
    assert crash["message"].startswith("Catch Exception from ")
    assert "RuntimeError: boom at step 4" in crash["message"]
    assert len(crash["message"].split("\n")) <= 11  # the last 10 lines of the traceback
    # every process logs its own stacks: the stalled frame is in the dump, once
    dumps = [r.getMessage() for r in package_log.records if "Stacks of all threads" in r.getMessage()]
    assert len(dumps) == 1
    assert "in on_step_end" in dumps[0] and "time.sleep(STALL_S)" in dumps[0]


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import jax
    from internevo_jax.config import config_from_dict
    from internevo_jax.monitor import setup_logging
    from internevo_jax.trainer import Callback, fit

    slow, down, root, model = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    setup_logging()
    # the second run loads the step compiled by the first (same program): a shorter test
    jax.config.update("jax_compilation_cache_dir", f"{root}/jax_cache")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    class FirstStep(Callback):
        def on_step_end(self, run, step, record):
            if step == 1:
                self.at = time.monotonic()  # compilation is behind

    def timed(name, alert):
        cfg = config_from_dict(
            {
                "JOB_NAME": name,
                "model": model,
                "data": dict(seq_len=16, micro_num=1, micro_bsz=1, total_steps=30),
                "parallel": dict(zero1=1),
                "ckpt": dict(enable_save_ckpt=False),
                "enable_tb": False,
                "monitor": dict(alert=alert),
                "run_dir": f"{root}/{name}",
            },
            log=lambda *_: None,
        )
        first, start = FirstStep(), time.monotonic()
        fit(cfg, callbacks=[first])
        end = time.monotonic()
        return {"total": end - start, "after_first_step": end - first.at}

    base = timed("base", {})
    alerts = timed(
        "alerts",
        dict(
            enable_feishu_alert=True,
            feishu_alert_address=slow + "/feishu/SECRET",
            light_monitor_address=slow + "/beat",
            webhook_address=down + "/hook?token=SECRET",
            heartbeat_interval_s=0,
            request_timeout_s=1.0,
            retries=2,
        ),
    )
    print(json.dumps({"base": base, "alerts": alerts, "done_at": time.time()}), flush=True)
    """
).replace("SECRET", SECRET)


def test_training_keeps_its_speed_and_exits_while_destinations_are_slow_or_down(
    tmp_path, http_server, down_url
):
    slow = http_server(delay=4.0)  # each request outlives request_timeout_s
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, slow.url, down_url, str(tmp_path), json.dumps(MODEL)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    exited_at = time.time()
    assert proc.returncode == 0, proc.stderr[-3000:]
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    base, alerts = times["base"], times["alerts"]
    # 30 heartbeats and 2 alerts went to a server that answers after 4 s and to one that refuses:
    # blocking sends would add over 30 s. The end of the run waits at most request_timeout_s (1 s);
    # the rest of the margin is for a machine busy with other work while the two runs are timed.
    assert alerts["after_first_step"] <= 1.5 * base["after_first_step"] + 5.0, times
    # the whole run too (its compilation came from the cache the first run filled)
    assert alerts["total"] <= 1.5 * base["total"] + 5.0, times
    # the process exits without waiting for the requests still hanging on the slow server
    assert exited_at - times["done_at"] < 10.0
    assert slow.requests, "the slow server was never reached"
    assert "could not deliver to webhook http://127.0.0.1:" in proc.stderr
    assert SECRET not in proc.stderr and SECRET not in proc.stdout
