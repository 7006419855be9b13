"""`python -m internevo_jax.train --config=PATH`: train from an InternEvo config file."""

from __future__ import annotations

import sys

from internevo_jax.initialize import get_default_parser, launch_from_config
from internevo_jax.monitor import logger


def _user_errors() -> tuple[type[BaseException], ...]:
    # Errors caused by the user's config, data, launch or checkpoint: shown as their one-paragraph
    # message without a traceback.
    from internevo_jax.checkpoint import CheckpointError
    from internevo_jax.config import ConfigError
    from internevo_jax.data import DataError
    from internevo_jax.parallel import LaunchError

    return (ConfigError, DataError, LaunchError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the distributed runtime, build the run and train. Returns the exit code."""
    args = get_default_parser().parse_args(argv)
    try:
        if args.dry_run:  # compile only, print the memory plan (docs/parallel.md)
            from internevo_jax.dry_run import dry_run

            return dry_run(
                args.config,
                overrides=args.overrides,
                devices=args.devices,
                device_memory=args.device_memory,
                topology=args.topology,
            )
        cfg = launch_from_config(
            args.config,
            launcher=args.launcher,
            host=args.host,
            port=args.port,
            rank=args.rank,
            world_size=args.world_size,
            seed=args.seed,
            overrides=args.overrides,
            timeout_s=args.distributed_timeout,
        )
        from internevo_jax.trainer import fit

        result = fit(cfg, profiling=args.profiling)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info(
        "finished at step %d; last loss %.4f",
        result.context.step,
        result.losses[-1] if result.losses else float("nan"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
