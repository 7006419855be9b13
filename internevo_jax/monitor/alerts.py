"""Alert delivery that never stops or slows training (docs/alerts.md).

`AlertSender` takes alerts and heartbeats from the training thread and delivers them on background
threads, one per destination, so that a slow destination delays no other: the caller only puts the
message on the destination's bounded queue (when it is full the message is dropped and counted, and
that is logged once). Each HTTP request has a short timeout; a failed
delivery is retried a bounded number of times with doubling waits, and the first delivery that
still fails is logged once per destination, the later ones only counted (a summary is logged when
the sender closes).

Destinations:

* `FeishuWebhook`: a Feishu bot webhook, in the "post" message InternEvo sends (title = the job key
  `<job id>_<job name>`, one text paragraph).
* `JsonWebhook`: any HTTP endpoint; the body is `Alert.to_json()` (job_name, kind, step, message,
  time, timestamp, host, process).
* `AlertFile`: appends `Alert.to_json()` as one JSON line per alert.
* `Heartbeat`: the light-monitor heartbeat, POSTed as JSON (InternEvo sends it through a client
  library whose wire protocol is not public; the body holds the same flattened metrics).

Webhook URLs carry their secret in the path or query: a log line names a URL only as
`scheme://host/…` (`redact_url`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from internevo_jax.monitor.writers import logger

JSON_HEADERS = {"Content-Type": "application/json;charset=utf-8"}
QUEUE_SIZE = 1000  # messages waiting for the sender thread; more are dropped (and counted)
RETRY_BACKOFF_S = 0.5  # the first wait before a retry; each later one doubles
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of an answer (a Feishu reply is a small JSON object)


def redact_url(url: str) -> str:
    """`url` as `scheme://host[:port]/…`: path, query and credentials (where webhooks keep their
    secret) are left out, so the result can be logged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme or not host:
        return "<URL without scheme or host>"
    hidden = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def http_address(address: str) -> str:
    """An http(s) URL for `address`; a bare `host:port` (how some light-monitor addresses are
    written) means `http://host:port/`."""
    if "://" not in address:
        return f"http://{address}"
    return address


def job_key(job_name: str, environ: Mapping[str, str] | None = None) -> str:
    """InternEvo's title of a Feishu alert: `<job id>_<job name>`; the job id is SLURM_JOB_ID, the
    first dash-separated part of KUBERNETES_POD_NAME, or MLP_TASK_ID (when MLP_TASK_INSTANCE_ID is
    set), else "none"."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID") is not None:
        job_id = env["SLURM_JOB_ID"]
    elif env.get("KUBERNETES_POD_NAME") is not None:
        job_id = env["KUBERNETES_POD_NAME"].split("-")[0]
    elif env.get("MLP_TASK_INSTANCE_ID") is not None:
        job_id = env.get("MLP_TASK_ID", "none")
    else:
        job_id = "none"
    return f"{job_id}_{job_name}"


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert. `kind`: start, finish, loss_spike, overflow, exception, hang or resumed; `step`:
    the metrics line's step (the batch index, from 0), None when no step applies."""

    kind: str
    message: str
    job_name: str
    host: str
    process: int = 0
    step: int | None = None
    timestamp: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The generic webhook's body and the alert file's line (docs/alerts.md)."""
        when = datetime.datetime.fromtimestamp(self.timestamp, datetime.UTC)
        return {
            "job_name": self.job_name,
            "kind": self.kind,
            "step": self.step,
            "message": self.message,
            "time": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "timestamp": round(self.timestamp, 3),
            "host": self.host,
            "process": self.process,
        }


def feishu_body(title: str, message: str, timestamp: float) -> dict[str, Any]:
    """Feishu's "post" message with one text paragraph, as InternEvo sends its alerts."""
    return {
        "timestamp": int(timestamp),
        "msg_type": "post",
        "content": {
            "post": {
                "zh_cn": {
                    "title": title,
                    "content": [[{"tag": "text", "text": message}]],
                }
            }
        },
    }


def heartbeat_body(
    record: Mapping[str, object], *, job_name: str, host: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The light-monitor heartbeat of a step record, flattened as InternEvo's `send_heartbeat`
    does: a key keeps its text before the first space with every character outside [A-Za-z0-9_]
    made "_" (`tgs (tokens/gpu/second)` -> `tgs`, `tokens/en` -> `tokens_en`), a dict value becomes
    `<key>_<subkey>` entries, NaN and infinities become null; then msg_type "train_metrics",
    `cluster` (CLUSTER_NAME, when set), and job_name, host and timestamp."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    for key, value in record.items():
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}_{sub}"
            data[re.sub(r"[^a-zA-Z0-9_]", "_", name.split(" ")[0])] = _finite_or_none(v)
    if env.get("CLUSTER_NAME"):
        data["cluster"] = env["CLUSTER_NAME"]
    data["msg_type"] = "train_metrics"
    data.update(job_name=job_name, host=host, timestamp=round(time.time(), 3))
    return data


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN or Infinity
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


class DeliveryError(RuntimeError):
    """A destination did not accept a message; the text never holds the destination's URL."""


def post_json(url: str, body: Mapping[str, Any], timeout: float) -> bytes:
    """POST `body` as JSON to `url` and return the answer's body; DeliveryError on any failure."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers=JSON_HEADERS, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as err:
        raise DeliveryError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DeliveryError(_without(str(err.reason), url)) from None
    except (TimeoutError, OSError, ValueError) as err:
        raise DeliveryError(_without(f"{type(err).__name__}: {err}", url)) from None


def _without(text: str, url: str) -> str:
    """`text` with `url` (should an error quote it) replaced by its redacted form."""
    return text.replace(url, redact_url(url)) if url else text


class FeishuWebhook:
    """A Feishu bot webhook (monitor.alert.feishu_alert_address)."""

    retries = True

    def __init__(self, url: str, title: str):
        self.url, self.title = url, title
        self.label = f"Feishu webhook {redact_url(url)}"

    def body(self, alert: Alert) -> dict[str, Any]:
        return feishu_body(self.title, alert.message, alert.timestamp)

    def deliver(self, body: Mapping[str, Any], timeout: float) -> None:
        answer = post_json(self.url, body, timeout)
        try:
            reply = json.loads(answer or b"{}")
        except ValueError:
            return  # a 2xx answer that is not JSON: a Feishu-compatible relay, accepted
        # Feishu answers HTTP 200 with a non-zero `code` when it refuses a message (bad
        # signature, keyword filter, rate limit)
        code = reply.get("code", reply.get("StatusCode", 0)) if isinstance(reply, dict) else 0
        if code:
            raise DeliveryError(f"Feishu refused the message: code {code}, {reply.get('msg', '')!s:.200}")


class JsonWebhook:
    """Any HTTP endpoint that takes `Alert.to_json()` (monitor.alert.webhook_address)."""

    retries = True

    def __init__(self, url: str):
        self.url = url
        self.label = f"webhook {redact_url(url)}"

    def body(self, alert: Alert) -> dict[str, Any]:
        return alert.to_json()

    def deliver(self, body: Mapping[str, Any], timeout: float) -> None:
        post_json(self.url, body, timeout)


class AlertFile:
    """Appends one JSON line per alert to a file (monitor.alert.alert_file_path)."""

    retries = True

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.label = f"alert file {self.path}"

    def body(self, alert: Alert) -> dict[str, Any]:
        return alert.to_json()

    def deliver(self, body: Mapping[str, Any], timeout: float) -> None:
        del timeout  # a local write; it runs on the sender thread, so a slow disk never stalls training
        line = json.dumps(body, ensure_ascii=False) + "\n"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            # one write of one line on an O_APPEND file: concurrent writers never interleave inside it
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as err:
            raise DeliveryError(f"{type(err).__name__}: {err.strerror or err}") from None


class Heartbeat:
    """The light-monitor heartbeat endpoint (monitor.alert.light_monitor_address). A heartbeat
    is not retried: the next one supersedes it."""

    retries = False

    def __init__(self, address: str):
        self.url = http_address(address)
        self.label = f"light monitor {redact_url(self.url)}"

    def deliver(self, body: Mapping[str, Any], timeout: float) -> None:
        post_json(self.url, body, timeout)


_STOP = object()


class _Channel:
    """One destination's bounded queue and thread: a slow or dead destination delays only itself."""

    def __init__(self, sender: AlertSender, destination, queue_size: int):
        self.sender, self.destination = sender, destination
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.thread = threading.Thread(target=self._run, name="internevo-alerts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sender = self.sender
        while not sender._abort.is_set():
            if sender._closing.is_set() and self.queue.empty():
                return
            body = self.queue.get()
            if body is _STOP or sender._abort.is_set():
                return
            sender._deliver(self.destination, body)


class AlertSender:
    """Delivers alerts to `destinations` and heartbeats to `heartbeat`, each destination on its
    own background thread with its own bounded queue.

    `alert` and `heartbeat` return at once (False when a copy was dropped). `close` waits at most
    `close_wait_s` for what is queued, then gives up on the rest (the threads are daemons: they
    never hold up the interpreter's exit)."""

    def __init__(
        self,
        destinations: Sequence = (),
        heartbeat: Heartbeat | None = None,
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = RETRY_BACKOFF_S,
        queue_size: int = QUEUE_SIZE,
    ):
        self.destinations = tuple(destinations)
        self.heartbeat_destination = heartbeat
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._closing = threading.Event()
        self._abort = threading.Event()  # set when close stops waiting: no more retries or sends
        self._lock = threading.Lock()  # the counters, updated from several threads
        self.delivered = self.failed = self.dropped = self.abandoned = 0
        self._failure_logged: set[int] = set()  # id() of the destinations whose failure was logged
        self._channels = {
            id(d): _Channel(self, d, queue_size)
            for d in (*self.destinations, *([heartbeat] if heartbeat else []))
        }

    def alert(self, alert: Alert) -> bool:
        """Queue `alert` for every alert destination; False if any copy was dropped."""
        return all([self._put(d, d.body(alert)) for d in self.destinations])

    def heartbeat(self, body: Mapping[str, Any]) -> bool:
        """Queue one heartbeat; False if it was dropped (or there is no heartbeat destination)."""
        if self.heartbeat_destination is None:
            return False
        return self._put(self.heartbeat_destination, body)

    def _put(self, destination, body: Mapping[str, Any]) -> bool:
        if self._closing.is_set():
            return False
        channel = self._channels[id(destination)]
        try:
            channel.queue.put_nowait(body)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1
            if first:
                logger.warning(
                    "alerts: the queue of %d unsent messages to %s is full (it is slow or down); "
                    "further messages that find a full queue are dropped, and counted",
                    channel.queue.maxsize,
                    destination.label,
                )
            return False

    def close(self, close_wait_s: float | None = None) -> None:
        """Deliver what is queued, waiting at most `close_wait_s` (default: the request timeout),
        then stop the threads; a summary is logged when anything was dropped or failed."""
        if self._closing.is_set():
            return
        self._closing.set()
        for channel in self._channels.values():
            try:
                channel.queue.put_nowait(_STOP)
            except queue.Full:
                pass  # the thread sees `_closing` once its queue is empty
        deadline = time.monotonic() + (self.timeout_s if close_wait_s is None else close_wait_s)
        for channel in self._channels.values():
            channel.thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        for channel in self._channels.values():
            if channel.thread.is_alive():
                self.abandoned += sum(1 for item in list(channel.queue.queue) if item is not _STOP)
        if self.failed or self.dropped or self.abandoned:
            logger.warning(
                "alerts: %d message(s) delivered, %d failed, %d dropped (queue full), %d not sent "
                "before the end of the run",
                self.delivered,
                self.failed,
                self.dropped,
                self.abandoned,
            )

    def _deliver(self, dest, body: Mapping[str, Any]) -> None:
        attempts = 1 + (self.retries if dest.retries else 0)
        error = None
        for attempt in range(attempts):
            if attempt:
                # wait before retrying; close() may cut the wait short
                if self._abort.wait(self.backoff_s * 2 ** (attempt - 1)):
                    break
            try:
                dest.deliver(body, self.timeout_s)
            except DeliveryError as err:
                error = err
                continue
            except Exception as err:  # noqa: BLE001 - a sender bug must not end the thread
                error = DeliveryError(f"{type(err).__name__}: {err}")
                continue
            with self._lock:
                self.delivered += 1
            return
        with self._lock:
            self.failed += 1
            first = id(dest) not in self._failure_logged
            self._failure_logged.add(id(dest))
        if first:
            logger.warning(
                "alerts: could not deliver to %s after %d attempt(s): %s; later failures of this "
                "destination are counted, not logged",
                dest.label,
                attempts,
                error,
            )
