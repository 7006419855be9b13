"""Plot runs' metrics.jsonl: loss, lr, grad_norm, loss_scale and tokens/s against step.

    python tools/plot_metrics.py RUN_DIR [RUN_DIR ...] [--out DIR]

Writes loss.png, lr.png, grad_norm.png, loss_scale.png, tgs.png (and validation.png when the runs
were validated) with every run overlaid, its folder name in the legend. --out defaults to
RUN_DIR/plots for one run and ./plots for several. Needs matplotlib: pip install 'internevo_jax[plot]'.
See internevo_jax/monitor/plots.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from internevo_jax.monitor.plots import PlotError, load_runs, plot_runs  # noqa: E402
from internevo_jax.writable import ERROR_EXIT  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) holding metrics.jsonl")
    p.add_argument("--out", help="output folder (default: RUN_DIR/plots for one run, ./plots for several)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or (os.path.join(args.run_dirs[0], "plots") if len(args.run_dirs) == 1 else "plots")
    try:
        paths = plot_runs(load_runs(args.run_dirs), out)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
