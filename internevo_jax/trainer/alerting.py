"""The run's alerts, light-monitor heartbeat and hang watchdog, from `monitor.alert` (docs/alerts.md).

`fit` adds an `Alerting` callback when `alerting_callbacks` finds a destination. Process 0 sends:
start and finish, a loss spike (a step's loss above `loss_spike_ratio` times the previous step's,
InternEvo's rule), each update skipped for non-finite gradients, the exception that ends a run, a
hang and the progress after it, and a heartbeat with the step's metrics at most every
`heartbeat_interval_s`. Every process runs the watchdog, so each one logs its own threads' stacks
when it stalls; the first finished step arms it (compilation is not timed). Sending only queues the message (`monitor.alerts.AlertSender`): a slow or
unreachable destination never slows the steps.
"""

from __future__ import annotations

import math
import socket
import time
import traceback
from collections.abc import Mapping

import jax

from internevo_jax.config import Config
from internevo_jax.config.schema import AlertConfig
from internevo_jax.monitor import logger
from internevo_jax.monitor.alerts import (
    Alert,
    AlertFile,
    AlertSender,
    FeishuWebhook,
    Heartbeat,
    JsonWebhook,
    heartbeat_body,
    job_key,
)
from internevo_jax.monitor.watchdog import HangWatchdog
from internevo_jax.trainer.callbacks import Callback, Run

TRACE_LINES = 10  # lines of an exception's traceback an alert carries (InternEvo sends its last 10)


def alert_destinations(alert: AlertConfig, job_name: str) -> tuple[list, Heartbeat | None]:
    """(alert destinations, heartbeat destination) that `alert` configures. As in InternEvo,
    enable_feishu_alert switches on the Feishu webhook, the heartbeat and the alert file;
    webhook_address works on its own."""
    destinations: list = []
    heartbeat = None
    if alert.enable_feishu_alert:
        if alert.feishu_alert_address:
            destinations.append(FeishuWebhook(alert.feishu_alert_address, title=job_key(job_name)))
        if alert.alert_file_path:
            destinations.append(AlertFile(alert.alert_file_path))
        if alert.light_monitor_address:
            heartbeat = Heartbeat(alert.light_monitor_address)
    if alert.webhook_address:
        destinations.append(JsonWebhook(alert.webhook_address))
    return destinations, heartbeat


def alerting_callbacks(cfg: Config, *, is_logger: bool) -> list[Callback]:
    """[Alerting] when monitor.alert names any destination, else []."""
    destinations, heartbeat = alert_destinations(cfg.monitor.alert, cfg.job_name)
    if not destinations and heartbeat is None:
        if cfg.monitor.alert.enable_feishu_alert and is_logger:
            logger.warning(
                "monitor.alert.enable_feishu_alert is True but none of feishu_alert_address, "
                "light_monitor_address and alert_file_path is set: no alert will be sent"
            )
        return []
    return [Alerting(cfg.monitor.alert, job_name=cfg.job_name)]


class Alerting(Callback):
    """Sends the run's alerts and heartbeats (process 0) and runs the hang watchdog (every process)."""

    def __init__(self, settings: AlertConfig, *, job_name: str):
        self.settings, self.job_name = settings, job_name
        self.host = socket.gethostname()
        self.process = 0
        self.sender: AlertSender | None = None
        self.watchdog: HangWatchdog | None = None
        self._prev_loss: float | None = None
        self._skipped = 0
        self._last_step: int | None = None
        self._last_heartbeat = -math.inf
        self._finished_one = False
        self._error: BaseException | None = None

    # -- hooks -----------------------------------------------------------------------------------

    def on_train_start(self, run: Run) -> None:
        self.process = jax.process_index()
        self._skipped = run.context.inf_nan_skip_batches
        if run.is_logger:
            destinations, heartbeat = alert_destinations(self.settings, self.job_name)
            self.sender = AlertSender(
                destinations,
                heartbeat,
                timeout_s=self.settings.request_timeout_s,
                retries=self.settings.retries,
            )
            logger.info(
                "alerts to %s",
                ", ".join(d.label for d in (*destinations, *([heartbeat] if heartbeat else []))),
            )
            self._send("start", f"Training in {self.host} is starting.", step=run.context.step)
        if self.settings.hang_timeout_s > 0:
            self.watchdog = HangWatchdog(
                self.settings.hang_timeout_s, on_hang=self._on_hang, on_resume=self._on_resume
            ).start()

    def on_step_start(self, run: Run, step: int) -> None:
        # progress, once a step has finished: the watchdog is armed by the first finished step, so
        # start-up and compilation (of unbounded length) are not timed
        if self._finished_one:
            self._beat()

    def on_step_end(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        batch = record.get("step")
        self._last_step = batch if isinstance(batch, int) else step - 1
        self._finished_one = True
        self._beat()
        if self.sender is None:
            return
        self._check_loss_spike(record)
        self._check_skipped_update(record)
        interval = self.settings.heartbeat_interval_s
        if (
            self.sender.heartbeat_destination is not None
            and time.monotonic() - self._last_heartbeat >= interval
        ):
            self._last_heartbeat = time.monotonic()
            self.sender.heartbeat(heartbeat_body(record, job_name=self.job_name, host=self.host))

    def on_step_skipped(self, run: Run, step: int) -> None:
        self._finished_one = True
        self._beat()

    def on_validation(self, run: Run, step: int, record: Mapping[str, object]) -> None:
        self._beat()

    def on_exception(self, run: Run, error: BaseException) -> None:
        self._error = error
        lines = "".join(traceback.format_exception(error)).rstrip("\n").split("\n")[-TRACE_LINES:]
        trace = "".join("\n" + line for line in lines)
        # InternEvo's wording; "rank id" is the JAX process index here
        self._send("exception", f"Catch Exception from {self.host} with rank id {self.process}:{trace}")

    def on_train_end(self, run: Run) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.sender is None:
            return
        if self._error is None:
            self._send("finish", f"Training in {self.host} completed ({run.context.step} steps done).")
        sender, self.sender = self.sender, None
        sender.close()

    # -- checks ----------------------------------------------------------------------------------

    def _check_loss_spike(self, record: Mapping[str, object]) -> None:
        loss = record.get("loss")
        if not isinstance(loss, (int, float)):
            return
        # InternEvo checks the loss it trains on: with a mixture-of-experts model, plus the aux loss
        loss = float(loss) + float(record.get("moe_loss", 0.0) or 0.0)
        ratio, prev = self.settings.loss_spike_ratio, self._prev_loss
        # NaN compares False, as in InternEvo: a NaN loss is reported as a skipped update instead
        if ratio is not None and prev is not None and loss > ratio * prev:
            self._send(
                "loss_spike",
                f"Checking step by step: Loss spike may be happened in step {self._last_step}, "
                f"loss value from {prev} to {loss}, please check it.",
            )
        self._prev_loss = loss

    def _check_skipped_update(self, record: Mapping[str, object]) -> None:
        skipped = record.get("inf_nan_skip_batches")
        if not isinstance(skipped, int) or skipped <= self._skipped:
            return
        self._skipped = skipped
        self._send(
            "overflow",
            f"Warning: skip parameter update at step {self._last_step}: the gradients are not finite "
            f"(inf or NaN), {skipped} update(s) skipped so far, loss scale now {record.get('loss_scale')}. "
            "Overflow occurs, please check it.",
        )

    # -- plumbing --------------------------------------------------------------------------------

    def _beat(self) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(self._last_step)

    def _send(self, kind: str, message: str, *, step: int | None = None) -> None:
        if self.sender is None:
            return
        self.sender.alert(
            Alert(
                kind=kind,
                message=message,
                job_name=self.job_name,
                host=self.host,
                process=self.process,
                step=self._last_step if step is None else step,
            )
        )

    def _on_hang(self, elapsed_s: float, step: int | None) -> None:
        # called on the watchdog thread: queueing is all that happens here
        self._send(
            "hang",
            f"Training may be in stuck status, please check it. No progress for {elapsed_s:.0f} s on "
            f"{self.host} (monitor.alert.hang_timeout_s={self.settings.hang_timeout_s:g}); last finished "
            f"step: {'none' if step is None else step}. Every process logs its threads' stacks.",
            step=step,
        )

    def _on_resume(self, stalled_s: float, step: int | None) -> None:
        self._send(
            "resumed",
            f"Training in {self.host} made progress again after a stall of {stalled_s:.0f} s.",
            step=step,
        )
