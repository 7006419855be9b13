"""A custom training script: `fit` with your own loss and one callback for your own metric.

    python examples/custom_train.py --config configs/demo.py --launcher local \
        --loss smooth_zloss --label_smoothing 0.1 --z_loss_weight 1e-4

With `--loss default` it trains exactly as `python -m internevo_jax.train` does.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from internevo_jax.initialize import get_default_parser, launch_from_config
from internevo_jax.monitor import JsonlWriter
from internevo_jax.trainer import Callback, fit


def smoothed_ce_with_z_loss(label_smoothing: float, z_loss_weight: float):
    """Label-smoothed token-mean cross-entropy plus z_loss_weight * mean(logsumexp(logits)^2).

    The z-loss keeps the softmax normaliser near 1 (PaLM's auxiliary loss). Both terms are means
    over the tokens whose label is not -100; the z-loss value is reported as an extra metric.
    """

    def loss_fn(logits, labels, batch):
        del batch
        logits = logits.astype(jnp.float32)
        valid = (labels != -100).astype(jnp.float32)
        count = jnp.maximum(valid.sum(), 1.0)
        logz = jax.nn.logsumexp(logits, axis=-1)
        label_logit = jnp.take_along_axis(logits, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        nll = logz - label_logit
        smooth = logz - logits.mean(axis=-1)
        ce = (((1 - label_smoothing) * nll + label_smoothing * smooth) * valid).sum() / count
        z_loss = z_loss_weight * (logz**2 * valid).sum() / count
        return ce + z_loss, {"z_loss": z_loss}

    return loss_fn


class CodeShare(Callback):
    """Adds `code_share`, the share of the step's tokens that are code, to every step's record
    (the metrics line and metrics.jsonl show it), and keeps a short summary in custom_metrics.jsonl."""

    SUMMARY = ("step", "loss", "lr", "grad_norm", "code_share", "z_loss")

    def __init__(self):
        self.summary = None

    def on_train_start(self, run):
        if run.is_logger:
            self.summary = JsonlWriter(os.path.join(run.run_dir, "custom_metrics.jsonl"))

    def add_metrics(self, run, step, record):
        tokens = sum(v for k, v in record.items() if k.startswith("tokens/"))
        return {"code_share": round(record.get("tokens/code", 0.0) / max(tokens, 1.0), 4)}

    def on_step_end(self, run, step, record):
        if self.summary is not None:
            self.summary.write({k: record[k] for k in self.SUMMARY if k in record})

    def on_train_end(self, run):
        if self.summary is not None:
            self.summary.close()


def main() -> None:
    parser = get_default_parser()
    parser.add_argument("--loss", choices=("default", "smooth_zloss"), default="default")
    parser.add_argument("--label_smoothing", type=float, default=0.1)
    parser.add_argument("--z_loss_weight", type=float, default=1e-4)
    args = parser.parse_args()

    cfg = launch_from_config(
        args.config,
        launcher=args.launcher,
        host=args.host,
        port=args.port,
        rank=args.rank,
        world_size=args.world_size,
        seed=args.seed,
        overrides=args.overrides,
    )
    loss_fn = None  # fit's default: InternEvo's cross-entropy with loss.label_smoothing
    if args.loss == "smooth_zloss":
        loss_fn = smoothed_ce_with_z_loss(args.label_smoothing, args.z_loss_weight)
    fit(cfg, loss_fn=loss_fn, callbacks=[CodeShare()], profiling=args.profiling)


if __name__ == "__main__":
    main()
