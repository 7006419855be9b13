"""Alert delivery against a real HTTP server: payloads field by field, the alert file, retries,
the bounded queue, secrets kept out of logs, the hang watchdog and the loss-spike rule."""

from __future__ import annotations

import datetime
import json
import math
import time
from types import SimpleNamespace

import pytest

from internevo_jax.config import ConfigError, config_from_dict
from internevo_jax.config.schema import AlertConfig
from internevo_jax.monitor import TGS_KEY
from internevo_jax.monitor.alerts import (
    Alert,
    AlertFile,
    AlertSender,
    FeishuWebhook,
    Heartbeat,
    JsonWebhook,
    heartbeat_body,
    job_key,
    redact_url,
)
from internevo_jax.monitor.watchdog import HangWatchdog
from internevo_jax.trainer.alerting import Alerting, alert_destinations

SECRET = "tok3n-s3cr3t"


def an_alert(**kw) -> Alert:
    fields = dict(kind="loss_spike", message="Loss spike", job_name="job", host="node1", process=0, step=7)
    return Alert(**{**fields, **kw})


def test_feishu_webhook_gets_internevo_post_message(http_server):
    server = http_server()
    sender = AlertSender([FeishuWebhook(f"{server.url}/open-apis/bot/v2/hook/{SECRET}", title="123_job")])
    alert = an_alert(message="Training in node1 is starting.", timestamp=1_700_000_000.75)
    assert sender.alert(alert)
    sender.close()
    ((path, headers, raw),) = server.requests
    assert path == f"/open-apis/bot/v2/hook/{SECRET}"
    assert headers["Content-Type"] == "application/json;charset=utf-8"
    body = json.loads(raw)
    assert set(body) == {"timestamp", "msg_type", "content"}
    assert body["timestamp"] == 1_700_000_000 and body["msg_type"] == "post"
    assert body["content"] == {
        "post": {
            "zh_cn": {
                "title": "123_job",
                "content": [[{"tag": "text", "text": "Training in node1 is starting."}]],
            }
        }
    }
    assert sender.delivered == 1 and sender.failed == 0


def test_generic_webhook_gets_the_documented_json(http_server):
    server = http_server()
    sender = AlertSender([JsonWebhook(f"{server.url}/hook?token={SECRET}")])
    sender.alert(an_alert(kind="overflow", message="skipped", step=12, process=3, timestamp=1_700_000_000.5))
    sender.close()
    (body,) = server.bodies(f"/hook?token={SECRET}")
    assert body == {
        "job_name": "job",
        "kind": "overflow",
        "step": 12,
        "message": "skipped",
        "time": "2023-11-14T22:13:20Z",
        "timestamp": 1_700_000_000.5,
        "host": "node1",
        "process": 3,
    }
    parsed = datetime.datetime.fromisoformat(body["time"].replace("Z", "+00:00"))
    assert parsed.timestamp() == int(body["timestamp"])


def test_heartbeat_flattens_the_record_as_internevo(http_server, monkeypatch):
    monkeypatch.setenv("CLUSTER_NAME", "c1")
    record = {
        "step": 4,
        "loss": 2.5,
        TGS_KEY: 1234.5,
        "grad_norm": {"0_default": 1.5},
        "mfu": math.nan,
        "tokens/en": 10.0,
        "moe_load": [1, 2],
    }
    body = heartbeat_body(record, job_name="job", host="node1")
    assert {k: body[k] for k in record if k in body} == {
        "step": 4,
        "loss": 2.5,
        "mfu": None,
        "moe_load": [1, 2],
    }
    assert body["tgs"] == 1234.5 and body["grad_norm_0_default"] == 1.5 and body["tokens_en"] == 10.0
    assert body["msg_type"] == "train_metrics" and body["cluster"] == "c1"
    assert body["job_name"] == "job" and body["host"] == "node1" and body["timestamp"] > 0
    server = http_server()
    sender = AlertSender(heartbeat=Heartbeat(server.url.removeprefix("http://")))  # bare host:port
    assert sender.heartbeat(body)
    sender.close()
    assert server.bodies("/") == [body]


def test_alert_file_gets_one_json_line_per_alert(tmp_path):
    path = tmp_path / "alerts" / "job_alert.log"
    sender = AlertSender([AlertFile(str(path))])
    sender.alert(an_alert(kind="start", message="Training in node1 is starting.", step=0))
    sender.alert(an_alert(kind="exception", message="Catch Exception\nline 1\nline 2"))
    sender.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["start", "exception"]
    assert json.loads(lines[1])["message"] == "Catch Exception\nline 1\nline 2"
    assert set(json.loads(lines[0])) == {
        "job_name",
        "kind",
        "step",
        "message",
        "time",
        "timestamp",
        "host",
        "process",
    }


def test_failures_are_retried_then_logged_once_without_the_secret(http_server, package_log):
    server = http_server(status=500)
    url = f"{server.url}/hook/{SECRET}?sign={SECRET}"
    sender = AlertSender([JsonWebhook(url)], retries=2, backoff_s=0.01)
    for i in range(3):
        sender.alert(an_alert(step=i))
    sender.close(close_wait_s=5)
    assert len(server.requests) == 9  # 1 + 2 retries per alert
    assert sender.failed == 3 and sender.delivered == 0
    failures = [r.getMessage() for r in package_log.records if "could not deliver" in r.getMessage()]
    assert len(failures) == 1
    assert f"webhook {server.url}/…" in failures[0] and "HTTP 500" in failures[0]
    assert "3 failed" in package_log.text  # the summary when the sender closes
    assert SECRET not in package_log.text


def test_feishu_refusal_counts_as_a_failure(http_server, package_log):
    server = http_server(reply=b'{"code":19021,"msg":"sign match fail or timestamp is not within one hour"}')
    sender = AlertSender([FeishuWebhook(f"{server.url}/hook/{SECRET}", title="t")], retries=0)
    sender.alert(an_alert())
    sender.close()
    assert sender.failed == 1
    assert "code 19021" in package_log.text and SECRET not in package_log.text


def test_a_full_queue_drops_and_counts_without_blocking(http_server, package_log):
    server = http_server(delay=2.0)
    sender = AlertSender([JsonWebhook(f"{server.url}/{SECRET}")], timeout_s=0.5, retries=0, queue_size=2)
    start = time.monotonic()
    results = [sender.alert(an_alert(step=i)) for i in range(20)]
    assert time.monotonic() - start < 0.5
    assert results.count(False) >= 17 and sender.dropped == results.count(False)
    assert sum("queue" in r.getMessage() and "full" in r.getMessage() for r in package_log.records) == 1
    start = time.monotonic()
    sender.close(close_wait_s=0.2)
    assert time.monotonic() - start < 1.0
    assert SECRET not in package_log.text


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://open.feishu.cn/open-apis/bot/v2/hook/abc-123", "https://open.feishu.cn/…"),
        ("http://user:pw@10.0.0.1:8080/x?token=1", "http://10.0.0.1:8080/…"),
        ("http://10.0.0.1:8080", "http://10.0.0.1:8080"),
        ("not a url", "<URL without scheme or host>"),
    ],
)
def test_redact_url_keeps_only_scheme_and_host(url, shown):
    assert redact_url(url) == shown


def test_job_key_is_job_id_then_job_name():
    assert job_key("7B", {}) == "none_7B"
    assert job_key("7B", {"SLURM_JOB_ID": "42"}) == "42_7B"
    assert job_key("7B", {"KUBERNETES_POD_NAME": "abc-worker-0"}) == "abc_7B"
    assert job_key("7B", {"MLP_TASK_INSTANCE_ID": "i", "MLP_TASK_ID": "t9"}) == "t9_7B"


def test_watchdog_fires_once_per_stall_dumps_stacks_and_rearms(package_log):
    hangs, resumes = [], []
    dog = HangWatchdog(
        0.5, on_hang=lambda s, step: hangs.append(step), on_resume=lambda s, step: resumes.append(s)
    )
    dog.start()
    dog.beat(step=3)
    time.sleep(2.5)  # five timeouts: still one report
    assert hangs == [3] and dog.fired == 1
    dumps = [r.getMessage() for r in package_log.records if "Stacks of all threads" in r.getMessage()]
    assert len(dumps) == 1
    # the stalled thread (this test, sleeping) is in the dump
    assert "test_watchdog_fires_once_per_stall_dumps_stacks_and_rearms" in dumps[0]
    assert 'Thread "MainThread"' in dumps[0]
    dog.beat(step=4)
    assert len(resumes) == 1 and resumes[0] >= 2.4
    for _ in range(5):  # steady beats: no report
        time.sleep(0.05)
        dog.beat(step=5)
    assert dog.fired == 1
    time.sleep(2.0)
    assert hangs == [3, 5] and dog.fired == 2
    dog.stop()
    assert not dog._thread.is_alive()


def test_watchdog_waits_for_the_first_beat_and_stop_ends_its_thread_at_once():
    unarmed = HangWatchdog(0.05).start()
    time.sleep(0.3)  # start-up and compilation: not timed until the first step finishes
    assert unarmed.fired == 0
    unarmed.stop()
    dog = HangWatchdog(3600).start()
    dog.beat()
    start = time.monotonic()
    dog.stop()
    assert time.monotonic() - start < 0.5 and not dog._thread.is_alive() and dog._thread.daemon


class Sent:
    """Stands in for AlertSender: keeps what would be sent."""

    def __init__(self):
        self.alerts, self.heartbeats = [], []
        self.heartbeat_destination = object()

    def alert(self, alert):
        self.alerts.append(alert)
        return True

    def heartbeat(self, body):
        self.heartbeats.append(body)
        return True

    def close(self, close_wait_s=None):
        """Nothing was sent, so nothing is waited for."""


def started_alerting(**settings) -> tuple[Alerting, Sent, SimpleNamespace]:
    alerting = Alerting(AlertConfig(hang_timeout_s=0, **settings), job_name="job")
    run = SimpleNamespace(is_logger=False, context=SimpleNamespace(step=0, inf_nan_skip_batches=0))
    alerting.on_train_start(run)  # not the logger: no real sender is made
    alerting.sender = sent = Sent()
    return alerting, sent, run


def test_loss_spike_rule_is_internevos():
    alerting, sent, run = started_alerting()
    losses = [2.0, 3.1, 3.0, 4.5, math.nan, 10.0, 1.0, 1.6]
    for i, loss in enumerate(losses):
        alerting.on_step_end(run, i + 1, {"step": i, "loss": loss, "inf_nan_skip_batches": 0})
    spikes = [a for a in sent.alerts if a.kind == "loss_spike"]
    # strictly more than 1.5x the previous step's loss; after a NaN nothing compares true
    assert [a.step for a in spikes] == [1, 7]
    assert spikes[0].message == (
        "Checking step by step: Loss spike may be happened in step 1, loss value from 2.0 to 3.1, please check it."
    )
    assert len(sent.heartbeats) == 1  # heartbeat_interval_s=60: only the first step's


def test_skipped_updates_alert_each_time_and_the_ratio_is_configurable():
    alerting, sent, run = started_alerting(loss_spike_ratio=None, heartbeat_interval_s=0)
    for i, skipped in enumerate([0, 1, 1, 2]):
        alerting.on_step_end(
            run, i + 1, {"step": i, "loss": 1.0 + 10 * i, "inf_nan_skip_batches": skipped, "loss_scale": 8.0}
        )
    assert [(a.kind, a.step) for a in sent.alerts] == [("overflow", 1), ("overflow", 3)]
    assert (
        "skip parameter update at step 1" in sent.alerts[0].message
        and "loss scale now 8.0" in sent.alerts[0].message
    )
    assert len(sent.heartbeats) == 4


def test_destinations_follow_internevos_switch():
    off = AlertConfig(feishu_alert_address="http://h/x", alert_file_path="a.log", light_monitor_address="h:1")
    assert alert_destinations(off, "job") == ([], None)
    on = AlertConfig(
        enable_feishu_alert=True,
        feishu_alert_address="http://h/x",
        alert_file_path="a.log",
        light_monitor_address="h:1",
        webhook_address="https://w/y",
    )
    destinations, heartbeat = alert_destinations(on, "job")
    assert [type(d).__name__ for d in destinations] == ["FeishuWebhook", "AlertFile", "JsonWebhook"]
    assert heartbeat.url == "http://h:1"
    only_webhook = AlertConfig(webhook_address="https://w/y")
    assert [type(d).__name__ for d in alert_destinations(only_webhook, "job")[0]] == ["JsonWebhook"]


def build(alert: dict):
    return config_from_dict({"monitor": {"alert": alert}}, source="cfg.py", log=lambda *_: None)


def test_alert_keys_load_and_are_not_listed_as_without_effect():
    cfg = build(
        dict(
            enable_feishu_alert=True,
            feishu_alert_address="https://open.feishu.cn/open-apis/bot/v2/hook/x",
            light_monitor_address="10.1.2.3:8080",
            alert_file_path="llm_alter/a.log",
            webhook_address="http://hooks.local/a",
            hang_timeout_s=300,
            heartbeat_interval_s=0,
            request_timeout_s=2,
            retries=0,
            loss_spike_ratio=2,
        )
    )
    a = cfg.monitor.alert
    assert a.hang_timeout_s == 300.0 and a.retries == 0 and a.loss_spike_ratio == 2.0
    assert not [k for k in cfg.no_effect_keys if k.startswith("monitor.alert")]
    # an address that is not used (alerts off) is not checked, as InternEvo does not read it
    assert (
        build(
            dict(enable_feishu_alert=False, feishu_alert_address="ftp://x")
        ).monitor.alert.enable_feishu_alert
        is False
    )


@pytest.mark.parametrize(
    "alert, key, words",
    [
        (dict(webhook_address=f"ftp://hooks.local/{SECRET}"), "webhook_address", "http:// or https://"),
        (
            dict(enable_feishu_alert=True, feishu_alert_address=f"open.feishu.cn/hook/{SECRET}"),
            "feishu_alert_address",
            "http:// or https://",
        ),
        (dict(hang_timeout_s=-1), "hang_timeout_s", "0 or more"),
        (dict(heartbeat_interval_s=float("inf")), "heartbeat_interval_s", "finite"),
        (dict(request_timeout_s=0), "request_timeout_s", "greater than 0"),
        (dict(retries=-1), "retries", "0 or more"),
        (dict(loss_spike_ratio=1.0), "loss_spike_ratio", "greater than 1"),
    ],
)
def test_bad_alert_values_are_refused_clearly(alert, key, words):
    with pytest.raises(ConfigError) as info:
        build(alert)
    message = str(info.value)
    assert info.value.key == f"monitor.alert.{key}" and words in message and "\n" not in message
    assert SECRET not in message


def test_sender_threads_are_daemons_and_close_is_idempotent(tmp_path):
    sender = AlertSender([AlertFile(str(tmp_path / "a.log"))], heartbeat=Heartbeat("127.0.0.1:9"))
    threads = [c.thread for c in sender._channels.values()]
    assert len(threads) == 2 and all(t.daemon for t in threads)
    sender.close()
    sender.close()
    assert not any(t.is_alive() for t in threads)
    assert not sender.alert(an_alert())  # closed: nothing more is queued


def test_a_slow_destination_does_not_delay_the_others(http_server):
    slow, fast = http_server(delay=4.0), http_server()
    sender = AlertSender([JsonWebhook(f"{slow.url}/a"), JsonWebhook(f"{fast.url}/a")], timeout_s=5.0)
    for i in range(3):
        sender.alert(an_alert(step=i))
    fast.wait_for(3, timeout=3.0)  # behind the slow one, the first would take 4 s, all three 12 s
    assert [b["step"] for b in fast.bodies("/a")] == [0, 1, 2]
    sender.close(close_wait_s=0)
