"""Start-up helpers shared by `python -m internevo_jax.train` and custom training scripts."""

from __future__ import annotations

import argparse

from internevo_jax.parallel.launch import LAUNCHERS


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
    return parser
