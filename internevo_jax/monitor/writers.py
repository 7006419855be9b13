"""Where per-step metrics go: the InternEvo-style stdout line and a JSONL file.

A writer has `write(record, kind="step")` (kind is "step" or "validation") and `close()`; the
trainer hands every writer the same records, so a new destination is one more class with these two
methods.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

from internevo_jax.monitor.record import ordered

logger = logging.getLogger("internevo_jax")


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{round(value, 6)}"
    return str(value)


def format_metrics_line(metrics: Mapping[str, object]) -> str:
    """`key=value,` pairs: InternEvo's keys first in its order, then ours, then any others as given.
    Per-layer lists (an MoE model's moe_load, moe_dropped) are left to the JSONL file."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in ordered(metrics).items() if not isinstance(v, list))


class LineWriter:
    """Logs each record as one `key=value,...` line; validation lines start with "validation: "."""

    def write(self, record: Mapping[str, object], kind: str = "step") -> None:
        if kind == "validation":
            logger.info("validation: %s", format_metrics_line(record))
        else:
            logger.info(format_metrics_line(record))

    def close(self) -> None:
        """Nothing to close: the lines go to the logger, whose handlers outlive the run."""


class JsonlWriter:
    """Appends one JSON object per record, steps and validations alike; NaN becomes null so the
    file stays strict JSON."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def write(self, record: Mapping[str, object], kind: str = "step") -> None:
        del kind  # one file for both kinds: validation records carry val/ keys
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def setup_logging(process_index: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Configure the package logger; processes other than 0 only report warnings and errors."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(level if process_index == 0 else logging.WARNING)
    logger.propagate = False
    return logger
