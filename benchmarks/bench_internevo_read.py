"""Host memory of reading an InternEvo checkpoint folder: our reader against loading every shard
whole (what InternEvo's own converters do with torch.load).

    python benchmarks/bench_internevo_read.py [--hidden 1024] [--layers 8] [--vocab 32000] [--tensor 2]
        [--folder /tmp/bench_internevo] [--write benchmarks/RESULTS.md]

Writes a bf16 InternLM2-style folder (tensor ranks --tensor, pipeline 1), then in a fresh process
each: (a) ours: every leaf of the params tree assembled in turn (as training does before placing it
on the devices) and dropped; (b) whole: torch.load of every shard (no mmap), as a plain reference.
A sampler thread records the peak anonymous resident memory (RssAnon, private memory; memory-mapped
shard pages are file cache the kernel can drop) above the process's baseline. Printed: that peak,
the largest shard and the largest whole tensor (fp32), in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MIB = 2**20


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def model_cfg(args):
    from internevo_jax.config import config_from_dict

    heads = args.hidden // 64
    model = dict(
        num_layers=args.layers,
        hidden_size=args.hidden,
        num_attention_heads=heads,
        num_kv_attention_heads=heads // 2,
        vocab_size=args.vocab,
        mlp_ratio=8 / 3,
        no_bias=True,
        dtype="torch.bfloat16",
    )
    return config_from_dict({"model_type": "INTERNLM2", "model": model}, "<bench>", log=lambda *a: None)


def write(args) -> dict:
    import numpy as np
    import torch

    from internevo_jax.checkpoint.internevo_pt.reader import internevo_tensors, naming_of
    from internevo_jax.checkpoint.internevo_pt.writer import TargetLayout, write_folder
    from internevo_jax.hf.tensors import unflatten, unrolled_leaves
    from internevo_jax.model import abstract_params, build_model

    model = build_model(model_cfg(args))
    rng = np.random.default_rng(0)
    flat = {
        k: rng.standard_normal(v.shape, dtype=np.float32)
        for k, v in unrolled_leaves(abstract_params(model)).items()
    }
    tensors = internevo_tensors(unflatten(flat), model)
    write_folder(
        args.folder,
        naming_of(model),
        args.layers,
        tensors,
        TargetLayout(tensor=args.tensor),
        dtype=torch.bfloat16,
    )
    shards = [os.path.getsize(os.path.join(args.folder, n)) for n in os.listdir(args.folder)]
    return {
        "params": sum(v.size for v in flat.values()),
        "largest_shard_mib": max(shards) / MIB,
        "largest_tensor_mib": max(v.nbytes for v in flat.values()) / MIB,
    }


def measure(args) -> dict:
    peak = {"value": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["value"] = max(peak["value"], rss_anon())
            time.sleep(0.002)

    if args.mode == "ours":
        from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder
        from internevo_jax.hf.tensors import unrolled_leaves
        from internevo_jax.model import abstract_params, build_model

        model = build_model(model_cfg(args))
        paths = list(unrolled_leaves(abstract_params(model)))
    import torch  # noqa: F401  (imported before the baseline in both modes)

    base = rss_anon()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    if args.mode == "ours":
        folder = InternEvoFolder(args.folder, model)
        for path in paths:
            leaf = folder.leaf(path)
            del leaf
    else:
        import torch

        states = [
            torch.load(os.path.join(args.folder, n), map_location="cpu")
            for n in sorted(os.listdir(args.folder))
        ]
        del states
    seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    return {"peak_anon_mib": (peak["value"] - base) / MIB, "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tensor", type=int, default=2)
    p.add_argument("--folder", default="/tmp/bench_internevo")
    p.add_argument("--mode", choices=("ours", "whole"), help=argparse.SUPPRESS)
    p.add_argument("--write", help="append the result section to this RESULTS.md")
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args)))
        return 0
    import shutil

    shutil.rmtree(args.folder, ignore_errors=True)
    sizes = write(args)
    rows = {}
    base = [sys.executable, __file__, "--hidden", str(args.hidden), "--layers", str(args.layers)]
    base += ["--vocab", str(args.vocab), "--tensor", str(args.tensor), "--folder", args.folder]
    for mode in ("ours", "whole"):
        out = subprocess.run([*base, "--mode", mode], capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(args.folder, ignore_errors=True)
    lines = [
        "| reader | peak private memory (MiB) | seconds |",
        "|---|---|---|",
        *(f"| {m} | {r['peak_anon_mib']:.0f} | {r['seconds']:.2f} |" for m, r in rows.items()),
    ]
    import torch

    notes = (
        f"torch {torch.__version__}. {sizes['params'] / 1e6:.0f}M parameters, bf16 shards over {args.tensor} tensor ranks; largest shard "
        f"{sizes['largest_shard_mib']:.0f} MiB, largest whole tensor (fp32) {sizes['largest_tensor_mib']:.0f} MiB."
    )
    print(notes)
    print("\n".join(lines))
    if args.write:
        import _results

        command = "python benchmarks/bench_internevo_read.py " + " ".join(
            a for a in (argv or sys.argv[1:]) if a
        )
        env = _results.environment()
        text = _results.section("InternEvo checkpoint read: host memory", command, env, [notes], lines)
        _results.append(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
