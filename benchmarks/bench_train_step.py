"""Train-step throughput: our trainer's config variants side by side, and a plain hand-written JAX step.

    python benchmarks/bench_train_step.py --config configs/bench_cpu.py --plain --steps 10
    python benchmarks/bench_train_step.py --config configs/bench_cpu.py --set data.micro_bsz=1 \\
        --set data.micro_num=4 --plain
    python benchmarks/bench_train_step.py --config configs/demo.py --set data.train_folder=None \\
        --variant model.scan_layers=False --variant model.scan_layers=True --steps 20

Each variant is the base config plus its `KEY=VALUE` overrides (comma-separated for several); the
first variant is the baseline of the "speed vs first" column. Ours runs as the trainer really runs:
`internevo_jax.trainer.fit` in this process (validation and checkpoint saving off, a temporary
run folder), a callback collecting each step's record; the first `--warmup` steps (compilation)
are dropped and the medians of the rest reported. Data is mock data unless the config names a folder.

`--plain` then times `benchmarks/plain_step.py`, the same model written as plain jnp functions, on
one device with the first variant's sizes and the same tokens per step: micro_num micro-batches of
[micro_bsz, seq_len] rows (accumulated with lax.scan when micro_num > 1), which is what ours runs
for data.pack_sample_into_one=True (attention per seq_len window). Each plain step is timed to
`block_until_ready` of its loss; its median over the same steps after the same warm-up. The "ours /
plain" column is our tokens/s/device over the plain step's. `--write RESULTS.md` appends the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from internevo_jax.config import load_config
from internevo_jax.trainer import Callback, fit
from internevo_jax.trainer.metrics import dense_params, model_flops_per_token, peak_flops_for

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when imported
import _results  # noqa: E402
import plain_step  # noqa: E402

TGS = "tgs (tokens/gpu/second)"


class StepRecords(Callback):
    """Keeps every step's record and what the MFU columns need from the run."""

    def __init__(self):
        self.records: list[dict] = []
        self.n_dense = 0

    def on_train_start(self, run):
        self.n_dense = dense_params(run.trainer.state.params)

    def on_step_end(self, run, step, record):
        self.records.append(dict(record))


def peak_memory_gib() -> float | None:
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30
    return None


def summarise(cfg, times: list[float], tokens_per_s: float, first_step_s: float, n_dense: int) -> dict:
    """Median, p10/p90 step time, model TFLOP/s and MFU of one device from tokens/s/device."""
    flops = model_flops_per_token(cfg, n_dense) * tokens_per_s
    peak = peak_flops_for(jax.devices()[0].device_kind)
    return {
        "median_step_s": statistics.median(times),
        "p10_step_s": float(np.percentile(times, 10)),
        "p90_step_s": float(np.percentile(times, 90)),
        "first_step_s": first_step_s,
        "tokens_per_s_per_device": tokens_per_s,
        "model_tflops_per_device": flops / 1e12,
        "mfu": flops / peak if peak else None,
    }


def measure(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    """Ours: `fit` for warmup + steps steps; medians over the steps after the warm-up."""
    total = warmup + steps
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as run_dir:
        bench = [f"run_dir={run_dir}", "data.valid_every=0", "ckpt.enable_save_ckpt=False"]
        cfg = load_config(config, [*overrides, *bench], log=lambda *_: None)
        if cfg.data.total_steps < total:
            raise SystemExit(f"data.total_steps={cfg.data.total_steps} is below --warmup + --steps ({total})")
        collect = StepRecords()
        fit(cfg, max_steps=total, callbacks=[collect])
    records = collect.records
    timed = records[warmup:] or records
    result = summarise(
        cfg,
        [r["fwd_bwd_time"] for r in timed],
        statistics.median(r[TGS] for r in timed),
        records[0]["fwd_bwd_time"],
        collect.n_dense,
    )
    tokens = cfg.data.micro_num * cfg.data.packed_length  # per data-parallel rank and step
    return {
        **result,
        "tokens_per_step_per_rank": tokens,
        "peak_memory_gib": peak_memory_gib(),
        "final_loss": records[-1]["loss"],
    }


def measure_plain(cfg, steps: int, warmup: int) -> dict:
    """The plain step on one device: micro_num x [micro_bsz, seq_len] rows per step."""
    gc.collect()  # our runs' train states go before the plain step allocates its own
    params = plain_step.init_params(cfg, jax.random.key(cfg.seed))
    opt_state = plain_step.make_optimizer(cfg).init(params)
    n_dense = plain_step.param_count(params) - int(params["embedding"].size)
    batch = plain_step.make_batch(cfg, jax.random.key(cfg.seed + 1))
    step = plain_step.make_step(cfg)
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, batch)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    tokens = int(batch["input_ids"].size)
    median = statistics.median(times[warmup:] or times)
    result = summarise(cfg, times[warmup:] or times, tokens / median, times[0], n_dense)
    return {**result, "tokens_per_step_per_rank": tokens, "final_loss": float(loss)}


def table(results: list[dict], plain: dict | None) -> list[str]:
    lines = [
        "| variant | median step (s) | p10-p90 (s) | tokens/s/device | model TFLOP/s/device | MFU | "
        "speed vs first | ours / plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = results[0]["median_step_s"]

    def row(r, vs_first: str, vs_plain: str) -> str:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        return (
            f"| {r['variant']} | {r['median_step_s']:.4f} | {r['p10_step_s']:.4f}-{r['p90_step_s']:.4f} | "
            f"{r['tokens_per_s_per_device']:.0f} | {r['model_tflops_per_device']:.3f} | {mfu} | "
            f"{vs_first} | {vs_plain} |"
        )

    for r in results:
        vs_plain = (
            f"{r['tokens_per_s_per_device'] / plain['tokens_per_s_per_device']:.2f}x" if plain else "n/a"
        )
        lines.append(row(r, f"{base / r['median_step_s']:.2f}x", vs_plain))
    if plain:
        lines.append(row(plain, "-", "1.00x"))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="also time the plain JAX step (plain_step.py)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--write", metavar="RESULTS_MD", help="append the table to this file")
    args = parser.parse_args(argv)

    results = []
    for variant in args.variant or [""]:
        extra = [v for v in variant.split(",") if v]
        overrides = [*args.overrides, *extra]
        results.append(
            {"variant": variant or "(base)", **measure(args.config, overrides, args.steps, args.warmup)}
        )
    plain = None
    notes = [
        f"Config {args.config} {' '.join(args.overrides)}".strip() + ";",
        f"medians over {args.steps} steps after {args.warmup} warm-up steps; ours = `fit` in-process, mock data"
        " unless the config names a folder.",
    ]
    if args.plain:
        first = [v for v in (args.variant or [""])[0].split(",") if v]
        cfg = load_config(args.config, [*args.overrides, *first], log=lambda *_: None)
        plain = {"variant": "plain JAX", **measure_plain(cfg, args.steps, args.warmup)}
        d = cfg.data
        shape = (
            f"[{d.micro_bsz}, {d.seq_len}]"
            if d.micro_num == 1
            else f"{d.micro_num} x [{d.micro_bsz}, {d.seq_len}]"
        )
        notes.append(
            f"plain JAX = benchmarks/plain_step.py on one device, {shape} rows per step (the first variant's sizes);"
            " 'ours / plain' = tokens/s/device over the plain step's."
        )
        for r in results:
            if r["tokens_per_step_per_rank"] != plain["tokens_per_step_per_rank"]:
                notes.append(
                    f"Note: {r['variant']} runs {r['tokens_per_step_per_rank']} tokens per step and rank, "
                    f"the plain step {plain['tokens_per_step_per_rank']}."
                )

    env = _results.environment()
    command = _results.command_line("benchmarks/bench_train_step.py", argv)
    text = _results.section(f"Train step on {env['device_kind']}", command, env, notes, table(results, plain))
    print(text)
    if args.write:
        _results.append(args.write, text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "plain": plain, "environment": env}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
