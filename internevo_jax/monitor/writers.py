"""Where per-step metrics go: the InternEvo-style stdout line and a JSONL file."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

logger = logging.getLogger("internevo_jax")

# InternEvo's keys, in InternEvo's order; users' log parsers depend on both.
LINE_KEYS = (
    "tflops",
    "step",
    "loss",
    "tgs (tokens/gpu/second)",
    "lr",
    "loss_scale",
    "grad_norm",
    "micro_num",
    "num_consumed_tokens",
    "inf_nan_skip_batches",
    "num_samples_in_batch",
    "largest_length",
    "largest_batch",
    "smallest_batch",
    "adam_beta2",
    "fwd_bwd_time",
)


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{round(value, 6)}"
    return str(value)


def format_metrics_line(metrics: Mapping[str, object]) -> str:
    """`key=value,` pairs: InternEvo's keys first in its order, then any extra keys as given."""
    keys = [k for k in LINE_KEYS if k in metrics] + [k for k in metrics if k not in LINE_KEYS]
    return ",".join(f"{k}={_fmt(metrics[k])}" for k in keys)


class JsonlWriter:
    """Appends one JSON object per step; NaN becomes null so the file stays strict JSON."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def write(self, record: Mapping[str, object]) -> None:
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
