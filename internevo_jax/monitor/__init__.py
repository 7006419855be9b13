"""Metric writers (stdout line, JSONL, TensorBoard, progress bar), the step record's key order, and logging."""

from internevo_jax.monitor.build import metric_writers, tensorboard_folder
from internevo_jax.monitor.record import LINE_KEYS, RECORD_KEYS, TGS_KEY, ordered
from internevo_jax.monitor.writers import JsonlWriter, LineWriter, format_metrics_line, logger, setup_logging

__all__ = [
    "LINE_KEYS",
    "RECORD_KEYS",
    "TGS_KEY",
    "JsonlWriter",
    "LineWriter",
    "format_metrics_line",
    "logger",
    "metric_writers",
    "ordered",
    "setup_logging",
    "tensorboard_folder",
]
