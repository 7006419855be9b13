"""Train-step throughput: median step time, tokens/s/device, TFLOP/s and MFU, for config variants side by side.

    python benchmarks/bench_train_step.py --config configs/demo.py --set data.train_folder=None \
        --variant model.scan_layers=False --variant model.scan_layers=True --steps 20

Each variant is the base config plus its `KEY=VALUE` overrides (comma-separated for several); the
first variant is the baseline of the ratio column. Data is mock data unless the config names a folder.
Compilation and `--warmup` steps are excluded from the timings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time

import jax
import numpy as np

from internevo_jax.config import load_config
from internevo_jax.data import build_train_loader
from internevo_jax.parallel import local_dp_ranks
from internevo_jax.trainer import build_trainer
from internevo_jax.trainer.metrics import dense_params, model_flops_per_token, peak_flops_for


def measure(cfg, steps: int, warmup: int) -> dict:
    """Run warmup + steps train steps on mock/config data; return timing statistics."""
    trainer = build_trainer(cfg)
    loader = build_train_loader(
        cfg, dp_size=trainer.sizes.dp, dp_ranks=local_dp_ranks(trainer.mesh), vocab_size=cfg.model.vocab_size
    )
    times = []
    t_compile = time.perf_counter()
    for step in range(warmup + steps):
        metrics = trainer.step(loader.get_batch(step), step_index=step)
        if step == 0:
            t_compile = time.perf_counter() - t_compile
        if step >= warmup:
            times.append(metrics["step_time"])
    devices = trainer.mesh.devices.size
    median = statistics.median(times)
    tokens = cfg.data.micro_num * cfg.data.packed_length * trainer.sizes.dp
    n_dense = dense_params(trainer.state.params)
    flops = model_flops_per_token(cfg, n_dense) * tokens / median
    peak = peak_flops_for(jax.devices()[0].device_kind)
    memory = None
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        memory = stats["peak_bytes_in_use"] / 2**30
    return {
        "median_step_s": median,
        "p10_step_s": float(np.percentile(times, 10)),
        "p90_step_s": float(np.percentile(times, 90)),
        "first_step_s": t_compile,
        "tokens_per_s_per_device": tokens / median / devices,
        "model_tflops_per_device": flops / devices / 1e12,
        "mfu": flops / (devices * peak) if peak else None,
        "peak_memory_gib": memory,
        "final_loss": metrics["loss"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    variants = args.variant or [""]
    results = []
    for variant in variants:
        extra = [v for v in variant.split(",") if v]
        cfg = load_config(args.config, [*args.overrides, *extra], log=lambda *_: None)
        results.append({"variant": variant or "(base)", **measure(cfg, args.steps, args.warmup)})

    base = results[0]["median_step_s"]
    print(f"# {args.config} {' '.join(args.overrides)}")
    print(
        f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}, "
        f"python {platform.python_version()}, {datetime.date.today()}"
    )
    print(
        "| variant | median step (s) | p10-p90 (s) | tokens/s/device | model TFLOP/s/device | MFU | speed vs first |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(
            f"| {r['variant']} | {r['median_step_s']:.4f} | {r['p10_step_s']:.4f}-{r['p90_step_s']:.4f} | "
            f"{r['tokens_per_s_per_device']:.0f} | {r['model_tflops_per_device']:.3f} | {mfu} | "
            f"{base / r['median_step_s']:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
