"""Metric writers, the step record's key order, and logging."""

from internevo_jax.monitor.record import LINE_KEYS, RECORD_KEYS, ordered
from internevo_jax.monitor.writers import JsonlWriter, LineWriter, format_metrics_line, logger, setup_logging

__all__ = [
    "LINE_KEYS",
    "RECORD_KEYS",
    "JsonlWriter",
    "LineWriter",
    "format_metrics_line",
    "logger",
    "ordered",
    "setup_logging",
]
