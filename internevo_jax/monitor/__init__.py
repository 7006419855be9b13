"""Metric writers and logging."""

from internevo_jax.monitor.writers import LINE_KEYS, JsonlWriter, format_metrics_line, logger, setup_logging

__all__ = ["LINE_KEYS", "JsonlWriter", "format_metrics_line", "logger", "setup_logging"]
