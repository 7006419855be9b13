"""The programmatic API for custom training scripts, with InternEvo's names.

InternEvo's flow, the JAX way (explicit state, no global context)::

    parser = get_default_parser()
    args = parser.parse_args()
    cfg = launch_from_config(args.config, launcher=args.launcher, seed=args.seed, overrides=args.overrides)
    env = initialize_parallel(cfg)
    model, params = initialize_model(cfg, env)
    train_dl, dataset_types = build_train_loader_with_data_type(cfg, env)
    valid_dls, _ = build_valid_loader_with_data_type(cfg, env)
    optimizer, beta2_scheduler, lr_scheduler = initialize_optimizer(cfg)
    trainer = initialize_trainer(cfg, env, model, params, optimizer, criterion=my_loss,
                                 lr_scheduler=lr_scheduler, beta2_scheduler=beta2_scheduler)
    for step, batch in train_dl:
        metrics = trainer.step(batch)

See docs/api.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax

from internevo_jax.config import Config, load_config
from internevo_jax.monitor import logger, setup_logging
from internevo_jax.parallel import (
    LAUNCHERS,
    ParallelEnv,
    initialize_distributed,
    parallel_env,
    resolve_launch,
)
from internevo_jax.platforms import apply_xla_flags


def get_default_parser() -> argparse.ArgumentParser:
    """InternEvo's default command-line arguments, plus `--set` overrides; add your own to it."""
    parser = argparse.ArgumentParser(
        prog="python -m internevo_jax.train",
        description="Train an InternLM-family model from an InternEvo config file.",
    )
    parser.add_argument(
        "--config",
        type=str,
        default=None,
        help="path to an InternEvo .py config file (default: every value at its default)",
    )
    parser.add_argument(
        "--launcher",
        type=str,
        default="slurm",
        choices=LAUNCHERS,
        help="how processes find each other: slurm (default; one process when SLURM "
        "variables are absent), torch (MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE), "
        "tpu (TPU VM metadata) or local (one process)",
    )
    parser.add_argument("--host", type=str, default=None, help="coordinator address for manual launches")
    parser.add_argument("--port", type=int, default=8888, help="coordinator port (default 8888)")
    parser.add_argument("--rank", type=int, default=None, help="this process's rank for manual launches")
    parser.add_argument(
        "--world_size", type=int, default=None, help="number of processes for manual launches"
    )
    parser.add_argument("--local_rank", type=int, default=None, help="accepted for compatibility; unused")
    parser.add_argument("--backend", type=str, default=None, help="accepted for compatibility; unused")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 1024)")
    parser.add_argument(
        "--profiling",
        action="store_true",
        help="write a jax.profiler trace of three steps to <run_dir>/profile",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.micro_bsz=4 (repeatable)",
    )
    parser.add_argument(
        "--distributed-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="how long to wait for every process to join (default 300)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="compile the train step without running it and print the memory one device needs "
        "(docs/parallel.md)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="with --dry-run: plan for N devices, using N CPU stand-ins (default: the devices present)",
    )
    parser.add_argument(
        "--topology",
        type=str,
        default=None,
        metavar="NAME",
        help="with --dry-run: plan for the devices of a TPU slice, e.g. v5p:4x4x4 or v5e:16x16, compiled "
        "by the TPU compiler on this host (needs libtpu: the tpu extra)",
    )
    parser.add_argument(
        "--device-memory",
        type=str,
        default=None,
        metavar="SIZE",
        help="with --dry-run: memory of one device, e.g. 80GB or 16GiB; the plan says whether it fits",
    )
    return parser


def launch_from_config(
    config: str | None,
    *,
    launcher: str = "local",
    host: str | None = None,
    port: int = 8888,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    timeout_s: int = 300,
) -> Config:
    """Load the config, start jax.distributed for multi-process jobs and set up logging.

    Returns the resolved Config. `seed` (when given) overrides the config's seed.
    """
    setup_logging()
    launch = resolve_launch(launcher, host=host, port=port, rank=rank, world_size=world_size)
    overrides = list(overrides) + ([f"seed={seed}"] if seed is not None else [])
    cfg = load_config(config, overrides, log=logger.warning)
    apply_xla_flags(cfg.xla_flags, warn=logger.warning)
    initialize_distributed(launch, timeout_s=timeout_s)
    setup_logging(jax.process_index())
    return cfg


def initialize_distributed_env(
    config: str | None,
    launcher: str = "slurm",
    master_port: int = 8888,
    seed: int | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """InternEvo's name and argument order for `launch_from_config`."""
    return launch_from_config(config, launcher=launcher, port=master_port, seed=seed, overrides=overrides)


def initialize_parallel(cfg: Config, devices: Sequence[jax.Device] | None = None) -> ParallelEnv:
    """Build the mesh from the `parallel` dict over `devices` (default: all devices of the job)."""
    return parallel_env(cfg, devices)


def initialize_model(cfg: Config, env: ParallelEnv, *, rng: jax.Array | None = None):
    """Return (model, params): the Flax module for cfg.model_type and its fp32 parameters, sharded on the mesh."""
    from internevo_jax.trainer import create_model, init_params

    model = create_model(cfg)
    rng = jax.random.key(cfg.seed) if rng is None else rng
    params, _ = init_params(model, env.mesh, env.rules, rng, cfg.data.seq_len)
    return model, params


def initialize_model_and_parallel_communicator(cfg: Config, devices: Sequence[jax.Device] | None = None):
    """InternEvo's name: the parallel environment, then the model on it. Returns (model, params, env)."""
    env = initialize_parallel(cfg, devices)
    model, params = initialize_model(cfg, env)
    return model, params, env


def build_train_loader_with_data_type(cfg: Config, env: ParallelEnv):
    """Return (train loader, dataset type names): the loader yields (step, batch) for this process's rows."""
    from internevo_jax.data import build_train_loader, type_names

    loader = build_train_loader(
        cfg, dp_size=env.sizes.dp, dp_ranks=env.dp_ranks, vocab_size=cfg.model.vocab_size
    )
    return loader, type_names(cfg)


def build_valid_loader_with_data_type(cfg: Config, env: ParallelEnv):
    """Return ({name: validation set}, dataset type names)."""
    from internevo_jax.data import build_valid_loaders, type_names

    sets = build_valid_loaders(
        cfg, dp_size=env.sizes.dp, dp_ranks=env.dp_ranks, vocab_size=cfg.model.vocab_size
    )
    return sets, type_names(cfg)


def initialize_optimizer(cfg: Config):
    """Return (optimizer, beta2_scheduler, lr_scheduler), InternEvo's order.

    The optimizer is an optax GradientTransformation (clipping + AdamW); the schedulers are
    callables of the update count: `lr_scheduler(t)`, `beta2_scheduler(t)`.
    """
    from internevo_jax.optim import build_optimizer

    tx, lr_schedule, beta2_schedule = build_optimizer(cfg)
    return tx, beta2_schedule, lr_schedule


def initialize_trainer(
    cfg: Config,
    env: ParallelEnv,
    model,
    params,
    optimizer,
    criterion=None,
    *,
    lr_scheduler=None,
    beta2_scheduler=None,
    dataset_types: Sequence[str] = (),
    grad_hook=None,
):
    """Return a Trainer whose `step(batch)` runs one compiled update.

    `criterion(logits, labels, batch)` replaces the loss: it returns a scalar, or (scalar,
    {name: scalar}) whose extra metrics are reported with the step's metrics. `params` is taken
    over by the trainer (its optimizer state is built around it).
    """
    from internevo_jax.trainer.build import assemble_trainer

    shardings = jax.tree.map(lambda p: p.sharding, params)
    return assemble_trainer(
        cfg,
        env,
        model,
        params,
        shardings,
        optimizer,
        lr_schedule=lr_scheduler,
        beta2_schedule=beta2_scheduler,
        loss_fn=criterion,
        grad_hook=grad_hook,
        type_names=dataset_types,
    )


def initialize_checkpoint_manager(cfg: Config, run_dir: str | None = None):
    """The checkpoint manager for `cfg.ckpt`: `maybe_save(...)` each step, `read(...)`, `finalize()`.

    What to load at start is `internevo_jax.trainer.startup.load_at_start(cfg, manager, ...)`.
    """
    from internevo_jax.checkpoint import build_checkpoint_manager
    from internevo_jax.trainer import resolve_run_dir

    return build_checkpoint_manager(cfg, run_dir or resolve_run_dir(cfg))
