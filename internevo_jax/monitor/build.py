"""The metric writers a run's config asks for, on the process that writes them."""

from __future__ import annotations

import json
import os

from internevo_jax.config import Config
from internevo_jax.monitor.alerts import redact_url
from internevo_jax.monitor.progress import ProgressBar, wants_progress_bar
from internevo_jax.monitor.tensorboard import TensorBoardWriter, copy_previous_events, run_texts
from internevo_jax.monitor.writers import JsonlWriter, LineWriter, logger

TENSORBOARD_SUBFOLDER = "tensorboard"  # <run_dir>/tensorboard unless tensorboard_folder says otherwise


def tensorboard_folder(cfg: Config, run_dir: str) -> str:
    """Where the event files go: `tensorboard_folder` from the config, else <run_dir>/tensorboard."""
    return cfg.tensorboard_folder or os.path.join(run_dir, TENSORBOARD_SUBFOLDER)


# monitor.alert keys that hold URLs: webhooks keep their secret in the path or the query
URL_KEYS = ("feishu_alert_address", "light_monitor_address", "webhook_address")


def _shown_config(cfg: Config) -> dict:
    """The resolved config as TensorBoard shows it: alert URLs without their secrets."""
    shown = cfg.to_dict()
    alert = shown["monitor"]["alert"]
    for key in URL_KEYS:
        if alert.get(key):
            alert[key] = redact_url(alert[key])
    return shown


def metric_writers(cfg: Config, run_dir: str, *, done_steps: int, last_step: int, devices: int) -> list:
    """The stdout line, <run_dir>/metrics.jsonl, TensorBoard (`enable_tb`) and the progress bar
    (`monitor.progress_bar`), for a run that has `done_steps` steps behind it and ends at `last_step`."""
    writers: list = [LineWriter(), JsonlWriter(os.path.join(run_dir, "metrics.jsonl"))]
    if cfg.enable_tb:
        folder = tensorboard_folder(cfg, run_dir)
        os.makedirs(folder, exist_ok=True)
        copy_previous_events(cfg.resume_tb_folder, folder)
        config_json = json.dumps(
            _shown_config(cfg), indent=2, sort_keys=True, default=str, ensure_ascii=False
        )
        writers.append(
            TensorBoardWriter(
                folder,
                first_step=done_steps + 1,
                queue_max_length=cfg.monitor.tensorboard.queue_max_length,
                texts={"job_name": cfg.job_name, **run_texts(config_json)},
            )
        )
        logger.info("TensorBoard events in %s", os.path.abspath(folder))
    if wants_progress_bar(cfg.monitor.progress_bar):
        writers.append(ProgressBar(done=done_steps, total=last_step, devices=devices))
    return writers
