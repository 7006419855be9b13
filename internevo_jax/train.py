"""`python -m internevo_jax.train --config=PATH`: train from an InternEvo config file."""

from __future__ import annotations

import sys

from internevo_jax.config import ConfigError, load_config
from internevo_jax.initialize import get_default_parser
from internevo_jax.monitor import logger, setup_logging


def _user_errors() -> tuple[type[BaseException], ...]:
    from internevo_jax.data import DataError
    from internevo_jax.parallel import LaunchError

    return (ConfigError, DataError, LaunchError)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the distributed runtime, build the run and train. Returns the exit code."""
    args = get_default_parser().parse_args(argv)
    setup_logging()
    try:
        from internevo_jax.parallel import initialize_distributed, resolve_launch

        launch = resolve_launch(
            args.launcher, host=args.host, port=args.port, rank=args.rank, world_size=args.world_size
        )
        overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
        cfg = load_config(args.config, overrides, log=logger.warning)
        initialize_distributed(launch, timeout_s=args.distributed_timeout)

        import jax

        setup_logging(jax.process_index())
        from internevo_jax.trainer import fit

        result = fit(cfg, profiling=args.profiling)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info(
        "finished %d steps; last loss %.4f",
        result.context.step,
        result.losses[-1] if result.losses else float("nan"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
