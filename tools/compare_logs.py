"""Align two training logs by step and print the per-step differences of loss, lr and grad_norm.

    python tools/compare_logs.py OURS.log INTERNEVO.log [--keys loss lr grad_norm] [--max_lr_rtol 1e-5]

Either log may be ours or InternEvo's (both number their lines from step=0 and show the lr the
next step uses). Lines that are not step metrics are ignored. With --max_lr_rtol (or
--max_loss_diff) the exit status is 1 when a common step differs by more, so a script can check a
run against a reference log.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from internevo_jax.monitor.log_lines import read_metrics_log  # noqa: E402

DEFAULT_KEYS = ("loss", "lr", "grad_norm")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", help="a training log (ours or InternEvo's)")
    p.add_argument("second", help="the log to compare it with")
    p.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS), help="metrics to compare")
    p.add_argument("--max_lr_rtol", type=float, help="fail when an lr differs by more (relative)")
    p.add_argument("--max_loss_diff", type=float, help="fail when a loss differs by more (absolute)")
    return p.parse_args(argv)


def _read(path: str) -> dict[int, dict]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return read_metrics_log(f)
    except OSError as err:
        raise SystemExit(f"{path}: cannot read the log ({err.strerror}).") from None


def _number(record: dict, key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.6g}"


def compare(first: dict[int, dict], second: dict[int, dict], keys) -> tuple[list[str], dict[str, float]]:
    """Table lines (step, then per key: first, second, difference) and the largest |difference| per
    key (relative for lr, absolute otherwise) over the steps both logs have."""
    header = ["step"] + [f"{k} ({side})" for k in keys for side in ("1", "2", "diff")]
    lines = ["\t".join(header)]
    worst = {k: 0.0 for k in keys}
    for step in sorted(set(first) & set(second)):
        row = [str(step)]
        for key in keys:
            a, b = _number(first[step], key), _number(second[step], key)
            diff = a - b
            if key == "lr" and b:
                diff /= abs(b)  # the lr spans orders of magnitude during warmup: compare relatively
            if not math.isnan(diff):
                worst[key] = max(worst[key], abs(diff))
            row += [_fmt(a), _fmt(b), _fmt(diff)]
        lines.append("\t".join(row))
    return lines, worst


def main(argv=None) -> int:
    args = parse_args(argv)
    first, second = _read(args.first), _read(args.second)
    for path, steps in ((args.first, first), (args.second, second)):
        if not steps:
            print(f"{path}: no step metrics lines found (lines with step=... and loss=...).", file=sys.stderr)
            return 2
    lines, worst = compare(first, second, args.keys)
    print("\n".join(lines))
    only = {args.first: sorted(set(first) - set(second)), args.second: sorted(set(second) - set(first))}
    common = len(lines) - 1
    print(f"# {common} common steps; " + "; ".join(f"max |diff| {k}: {_fmt(v)}" for k, v in worst.items()))
    for path, steps in only.items():
        if steps:
            print(f"# only in {path}: {len(steps)} steps ({steps[0]}..{steps[-1]})")
    failed = (args.max_lr_rtol is not None and worst.get("lr", 0.0) > args.max_lr_rtol) or (
        args.max_loss_diff is not None and worst.get("loss", 0.0) > args.max_loss_diff
    )
    return 1 if failed or common == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
