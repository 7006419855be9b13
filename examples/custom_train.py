"""A custom training script on the programmatic API: your own loss and your own metric.

    python examples/custom_train.py --config configs/demo.py --launcher local \
        --loss smooth_zloss --label_smoothing 0.1 --z_loss_weight 1e-4

With `--loss default` it trains exactly as `python -m internevo_jax.train` does.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from internevo_jax.initialize import (
    build_train_loader_with_data_type,
    build_valid_loader_with_data_type,
    get_default_parser,
    initialize_model,
    initialize_optimizer,
    initialize_parallel,
    initialize_trainer,
    launch_from_config,
)
from internevo_jax.monitor import JsonlWriter, format_metrics_line, logger
from internevo_jax.trainer import resolve_run_dir


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
    env = initialize_parallel(cfg)
    model, params = initialize_model(cfg, env)
    train_dl, dataset_types = build_train_loader_with_data_type(cfg, env)
    valid_dls, _ = build_valid_loader_with_data_type(cfg, env) if cfg.data.valid_every > 0 else ({}, None)
    optimizer, beta2_scheduler, lr_scheduler = initialize_optimizer(cfg)
    criterion = None
    if args.loss == "smooth_zloss":
        criterion = smoothed_ce_with_z_loss(args.label_smoothing, args.z_loss_weight)
    trainer = initialize_trainer(
        cfg,
        env,
        model,
        params,
        optimizer,
        criterion,
        lr_scheduler=lr_scheduler,
        beta2_scheduler=beta2_scheduler,
        dataset_types=dataset_types,
    )

    writer = JsonlWriter(os.path.join(resolve_run_dir(cfg), "custom_metrics.jsonl"))
    for step, batch in train_dl:
        if train_dl.should_skip(step):
            trainer.skip(step_index=step)
            continue
        metrics = trainer.step(batch, step_index=step)
        # an extra metric of our own: the share of the step's tokens that are code
        tokens = {k: v for k, v in metrics.items() if k.startswith("tokens/")}
        code_share = metrics.get("tokens/code", 0.0) / max(sum(tokens.values()), 1.0)
        line = {
            "step": step + 1,
            "loss": metrics["loss"],
            "lr": metrics["lr"],
            "grad_norm": metrics["grad_norm"],
            "code_share": round(code_share, 4),
        }
        if "z_loss" in metrics:
            line["z_loss"] = metrics["z_loss"]
        logger.info(format_metrics_line(line))
        writer.write(line)
        if valid_dls and trainer.context.step % cfg.data.valid_every == 0:
            logger.info("validation: %s", format_metrics_line(trainer.evaluate(valid_dls)))
    writer.close()


if __name__ == "__main__":
    main()
