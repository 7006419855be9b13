"""Loader throughput: packed tokens per second built by one loader process, in-process and with workers.

    python tools/build_demo_data.py --out .cache/demo
    python benchmarks/bench_loader.py --config configs/demo.py --set data.train_folder=.cache/demo/train \
        --set data.seq_len=2048 --set data.micro_num=4 --micro_bsz 2 --micro_bsz 4 --num_worker 0 1 2

For every micro_bsz: `get_batch(step)` in a loop (num_worker 0), then iterating the loader with
data.num_worker = n (grain worker processes). A step is micro_num packs of seq_len * micro_bsz tokens
per data-parallel rank; the loader feeds `--dp_ranks` ranks (one process's share). Tokens/s counts the
packed tokens of the timed steps (padding included: packs have none, every token is real data), after
`--warmup` steps; with workers after `--worker_warmup` steps, which cover starting them and drain the
batches they build ahead meanwhile, so the rate is their sustained rate, not the prefetch buffer's. `--target` is the rate the loader must reach.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from internevo_jax.config import load_config  # noqa: E402
from internevo_jax.data import build_train_loader  # noqa: E402


def _tokens(batch) -> int:
    return int(batch["input_ids"].size)


def measure(
    cfg, *, dp_size: int, dp_ranks: list[int], num_worker: int, steps: int, warmup: int, worker_warmup: int
) -> dict:
    if num_worker:
        warmup = worker_warmup
    loader = build_train_loader(cfg, dp_size=dp_size, dp_ranks=dp_ranks)
    loader.num_workers = num_worker  # the one setting that differs between rows
    loader.total_steps = warmup + steps
    times, tokens = [], 0
    if num_worker == 0:
        for step in range(warmup):
            loader.get_batch(step)
        for step in range(warmup, warmup + steps):
            t = time.perf_counter()
            batch = loader.get_batch(step)
            times.append(time.perf_counter() - t)
            tokens += _tokens(batch)
    else:
        with loader:
            it = iter(loader)
            for _ in range(warmup):
                next(it)
            t = time.perf_counter()
            for _, batch in it:
                now = time.perf_counter()
                times.append(now - t)
                t = now
                tokens += _tokens(batch)
    total = sum(times)
    return {
        "num_worker": num_worker,
        "steps": len(times),
        "tokens_per_step": tokens // len(times),
        "median_step_s": statistics.median(times),
        "tokens_per_s": tokens / total,
        "packs": loader.num_packs,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/demo.py")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--micro_bsz", type=int, action="append", default=None)
    p.add_argument("--num_worker", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dp_size", type=int, default=1)
    p.add_argument(
        "--dp_ranks", type=int, nargs="+", default=None, help="ranks this process feeds (default all)"
    )
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--worker_warmup",
        type=int,
        default=300,
        help="untimed steps with workers: enough to empty the batches they prefetched while starting",
    )
    p.add_argument("--target", type=float, default=1.08e6, help="tokens/s the loader must reach (0: none)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    ranks = args.dp_ranks if args.dp_ranks is not None else list(range(args.dp_size))
    results = []
    for mb in args.micro_bsz or [2, 4]:
        cfg = load_config(args.config, [*args.overrides, f"data.micro_bsz={mb}"], log=lambda *_: None)
        for n in args.num_worker:
            r = measure(
                cfg,
                dp_size=args.dp_size,
                dp_ranks=ranks,
                num_worker=n,
                steps=args.steps,
                warmup=args.warmup,
                worker_warmup=args.worker_warmup,
            )
            r.update(seq_len=int(cfg.data.seq_len), micro_bsz=mb, micro_num=int(cfg.data.micro_num))
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    try:
        import grain

        grain_version = getattr(grain, "__version__", "?")
    except ImportError:
        grain_version = "missing"
    import jax

    print(f"# {args.config} {' '.join(args.overrides)}; dp_size {args.dp_size}, ranks {ranks}")
    print(
        f"# python {platform.python_version()}, jax {jax.__version__}, grain {grain_version}, "
        f"{platform.machine()}, {datetime.date.today()}"
    )
    print(
        "| seq_len | micro_bsz | micro_num | num_worker | tokens/step | median step (ms) | tokens/s | vs target |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        ratio = f"{r['tokens_per_s'] / args.target:.2f}x" if args.target else "n/a"
        print(
            f"| {r['seq_len']} | {r['micro_bsz']} | {r['micro_num']} | {r['num_worker']} | {r['tokens_per_step']} | "
            f"{r['median_step_s'] * 1e3:.2f} | {r['tokens_per_s']:,.0f} | {ratio} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
