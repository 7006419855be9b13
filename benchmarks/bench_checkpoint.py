"""How long a checkpoint save blocks the training loop: asynchronous save vs synchronous (save, then wait).

    python benchmarks/bench_checkpoint.py --config configs/demo.py --set data.train_folder=None \
        --repeats 5 --folder /tmp/bench_ckpt

    # a larger model: add model overrides, e.g. ~0.5B parameters
    python benchmarks/bench_checkpoint.py --config configs/demo.py --set data.train_folder=None \
        --set model.hidden_size=1536 --set model.num_layers=16 --set model.vocab_size=32000 \
        --set model.num_attention_heads=12 --repeats 3 --folder /tmp/bench_ckpt

For each mode the run saves the TrainState (fp32 master weights + Adam moments + counters) `--repeats`
times through the training run's CheckpointManager into a local folder:

* async: `blocked` is the time `save()` takes (what the training loop waits before its next step);
  `total` is the time until the checkpoint is complete (COMMITTED written), measured by waiting on it.
* sync: `save()` followed by `wait()`; the loop is blocked for the whole save.

Printed per mode: median blocked seconds, median total seconds, bytes written per checkpoint, and the
blocked-time ratio sync / async. Use --json for a machine-readable line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time

import jax

from internevo_jax.checkpoint import build_checkpoint_manager
from internevo_jax.config import load_config
from internevo_jax.data import build_train_loader
from internevo_jax.parallel import local_dp_ranks
from internevo_jax.trainer import build_trainer
from internevo_jax.trainer.metrics import dense_params
from internevo_jax.trainer.state import TrainContext


def folder_bytes(path: str) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
    return total


def measure(cfg, folder: str, repeats: int, trainer, loader) -> dict:
    results = {}
    for mode in ("async", "sync"):
        shutil.rmtree(folder, ignore_errors=True)
        manager = build_checkpoint_manager(cfg, folder + ".run")
        blocked, total, sizes = [], [], []
        try:
            for i in range(repeats):
                step = i + 1
                start = time.perf_counter()
                manager.save(trainer.state, TrainContext(step=step), loader)
                if mode == "sync":
                    manager.wait()
                blocked.append(time.perf_counter() - start)
                manager.wait()
                total.append(time.perf_counter() - start)
                sizes.append(folder_bytes(os.path.join(folder, str(step))))
        finally:
            manager.finalize()
        results[mode] = {
            "median_blocked_s": statistics.median(blocked),
            "median_total_s": statistics.median(total),
            "bytes_written": int(statistics.median(sizes)),
            "blocked_s": blocked,
            "total_s": total,
        }
    results["blocked_ratio_sync_over_async"] = (
        results["sync"]["median_blocked_s"] / results["async"]["median_blocked_s"]
    )
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder + ".run", ignore_errors=True)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default="/tmp/bench_ckpt", help="local folder the checkpoints go to")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    folder = os.path.abspath(args.folder)
    cfg = load_config(
        args.config, overrides=[*args.set, f"ckpt.save_ckpt_folder={folder}", "ckpt.keep_last_n=1"]
    )
    trainer = build_trainer(cfg)
    loader = build_train_loader(
        cfg, dp_size=trainer.sizes.dp, dp_ranks=local_dp_ranks(trainer.mesh), vocab_size=cfg.model.vocab_size
    )
    # A fresh optimizer state is all zeros, which the array store compresses to almost nothing:
    # give the moments random values so that the bytes written are those of a trained state.
    state = trainer.state
    leaves, treedef = jax.tree.flatten(state.opt_state)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    leaves = [
        x + 1e-3 * jax.random.normal(k, x.shape, x.dtype)
        if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) and x.size > 1
        else x
        for x, k in zip(leaves, keys)
    ]
    trainer.state = state.replace(opt_state=jax.tree.unflatten(treedef, leaves))
    del state, leaves
    jax.block_until_ready(trainer.state)
    n_params = sum(x.size for x in jax.tree.leaves(trainer.state.params))
    res = measure(cfg, folder, args.repeats, trainer, loader)
    record = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
        "params": n_params,
        "dense_params": dense_params(trainer.state.params),
        "overrides": args.set,
        **res,
    }
    if args.json:
        print(json.dumps(record))
        return
    print(f"params: {n_params / 1e6:.1f}M   devices: {record['devices']}   repeats: {args.repeats}")
    print(f"{'mode':6} {'blocked s (median)':>20} {'total s (median)':>18} {'bytes written':>15}")
    for mode in ("async", "sync"):
        r = res[mode]
        print(
            f"{mode:6} {r['median_blocked_s']:>20.3f} {r['median_total_s']:>18.3f} {r['bytes_written']:>15,}"
        )
    print(f"blocked-time ratio sync/async: {res['blocked_ratio_sync_over_async']:.1f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
