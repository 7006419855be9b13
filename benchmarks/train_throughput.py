"""Training throughput of the real CLI: `python -m internevo_jax.train`, once per variant, read back from its run folder.

    python benchmarks/train_throughput.py                                # the GPU plan on configs/bench_1p5b.py
    python benchmarks/train_throughput.py --write benchmarks/RESULTS.md  # the same, appended (`make bench-gpu`)
    python benchmarks/train_throughput.py --small                        # a tiny model, few steps (CPU smoke)
    python benchmarks/train_throughput.py --only mock remat              # some of the plan's variants
    python benchmarks/train_throughput.py --variant model.checkpoint=True --variant data.seq_len=8192,data.micro_bsz=4

Each variant is a list of `--set KEY=VALUE` overrides (comma-separated) on top of `--config` and the
common `--set`s. Every variant is a fresh subprocess, `python -m internevo_jax.train --config ...
--set ...`, exactly as a user starts training, with its own temporary run_dir, validation off and
checkpoints saved every `--checkpoint_every` steps (asynchronously, as a real run does). Afterwards
`<run_dir>/metrics.jsonl` (InternEvo's per-step keys) gives the medians over the steps after
`--warmup`: fwd_bwd_time, tgs (tokens/gpu/second), mfu and InternEvo's tflops; `<run_dir>/run_summary.json`
(written by the training loop at the end of a run) gives the peak memory, the compile time and the
time to the first step, shown as n/a when the file or a key is missing.

The default plan (`--only` picks by name): `mock` (mock data, data.pack_sample_into_one=True),
`binmeta` (a synthetic bin/meta folder of random tokens written here with the package's own writer,
data.pack_sample_into_one=False: the real loader, packing and segment-masked attention), `remat`
(model.checkpoint=True) and `longseq` (twice the seq_len, half the micro_bsz: the same tokens per
step; 8192 x 4 for the 1.5B config). In a custom `--variant`, `{bin_data}` stands for that folder.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared results helper, also when imported
import _results  # noqa: E402

from internevo_jax.config import load_config  # noqa: E402
from internevo_jax.data.binmeta import BinWriter  # noqa: E402

BIN_DATA = "{bin_data}"
TGS = "tgs (tokens/gpu/second)"
# --small: a tiny fp32 model that trains a few steps on CPU in seconds.
SMALL = (
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_attention_heads=4",
    "model.vocab_size=512",
    "model.dtype=torch.float32",
    "data.seq_len=64",
    "data.micro_bsz=2",
    "data.micro_num=1",
)
COLUMNS = (
    "variant",
    "median step (s)",
    "tokens/s/device",
    "MFU",
    "InternEvo tflops",
    "peak memory (GiB)",
    "compile (s)",
    "time to first step (s)",
)


class Variant(NamedTuple):
    name: str
    overrides: tuple[str, ...]


def default_plan(seq_len: int, micro_bsz: int) -> list[Variant]:
    """The GPU plan's variants for a base config of `seq_len` x `micro_bsz` tokens per micro-batch."""
    return [
        Variant("mock", ("data.pack_sample_into_one=True",)),
        Variant("binmeta", ("data.pack_sample_into_one=False", f"data.train_folder={BIN_DATA}")),
        Variant("remat", ("data.pack_sample_into_one=True", "model.checkpoint=True")),
        Variant(
            "longseq",
            (
                "data.pack_sample_into_one=True",
                f"data.seq_len={2 * seq_len}",
                f"data.micro_bsz={max(1, micro_bsz // 2)}",
            ),
        ),
    ]


def write_synthetic_bin(folder: Path, tokens: int, seq_len: int, vocab_size: int, seed: int = 0) -> Path:
    """`folder/en/synthetic.bin` (+ .meta): random samples of seq_len / 4 .. seq_len tokens, `tokens` in all."""
    rng = np.random.default_rng(seed)
    with BinWriter(folder / "en" / "synthetic.bin") as writer:
        while writer.num_tokens < tokens:
            n = int(rng.integers(max(1, seq_len // 4), seq_len + 1))
            writer.write(rng.integers(0, vocab_size, size=n).tolist())
    return folder


def train_command(config: str, overrides: list[str]) -> list[str]:
    command = [sys.executable, "-m", "internevo_jax.train", "--config", config, "--launcher", "local"]
    for item in overrides:
        command += ["--set", item]
    return command


def read_metrics(path: Path) -> list[dict]:
    """The step records of a metrics.jsonl (lines that are not JSON step records are skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "fwd_bwd_time" in record and "step" in record:
            records.append(record)
    return records


def read_summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def median_of(records: list[dict], key: str) -> float | None:
    values = [r.get(key) for r in records]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(values) if values else None


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarise(records: list[dict], summary: dict, warmup: int) -> dict:
    """Medians over the steps after `warmup`, and the run summary's numbers (None when absent)."""
    timed = [r for r in records if int(r["step"]) >= warmup] or records  # "step" counts from 0
    peak = number(summary.get("peak_memory_bytes"))
    return {
        "steps": len(records),
        "timed_steps": len(timed),
        "median_step_s": median_of(timed, "fwd_bwd_time"),
        "tokens_per_s_per_device": median_of(timed, TGS),
        "mfu": median_of(timed, "mfu"),
        "tflops": median_of(timed, "tflops"),
        "peak_memory_gib": None if peak is None else peak / 2**30,
        "compile_s": number(summary.get("compile_s")),
        "time_to_first_step_s": number(summary.get("time_to_first_step_s")),
        "device_kind": summary.get("device_kind"),
        "devices": summary.get("devices"),
        "final_loss": records[-1].get("loss") if records else None,
    }


def run_variant(args, variant: Variant, common: list[str], workdir: Path) -> dict:
    """One training run of `variant` in a fresh subprocess; its numbers, or its failure."""
    run_dir = workdir / variant.name
    overrides = [*common, *variant.overrides]
    if any(BIN_DATA in item for item in overrides):
        resolved = [item for item in overrides if BIN_DATA not in item]
        cfg = load_config(args.config, resolved, log=lambda *_: None)
        d = cfg.data
        # One device's tokens for the whole run, and at least one step of 64 data-parallel ranks,
        # a quarter more for what packing leaves unfilled (when the packs run out the sampler starts
        # a new epoch, so more devices simply go round again).
        tokens = int(1.25 * d.packed_length * d.micro_num * max(args.steps, 64))
        data = write_synthetic_bin(workdir / f"{variant.name}_data", tokens, d.seq_len, cfg.model.vocab_size)
        overrides = [item.replace(BIN_DATA, str(data)) for item in overrides]
    save = args.checkpoint_every > 0
    # the plan's defaults first, so a variant may turn validation or saving on; the run folder and
    # the step count last, so nothing overrides them
    overrides = [
        "data.valid_every=0",
        f"ckpt.enable_save_ckpt={save}",
        *([f"ckpt.checkpoint_every={args.checkpoint_every}"] if save else []),
        *overrides,
        f"run_dir={run_dir}",
        f"data.total_steps={args.steps}",
        f"lr_scheduler.total_steps={args.steps}",
    ]
    command = train_command(args.config, overrides)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: nothing to resume, nothing appended to
    run_dir.mkdir(parents=True)
    log_path = run_dir / "train.log"
    print(f"[{variant.name}] {' '.join(command[1:])}", file=sys.stderr, flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            rc = subprocess.run(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    records = read_metrics(run_dir / "metrics.jsonl")
    result = {
        "variant": variant.name,
        "overrides": list(variant.overrides),
        "returncode": rc,
        **summarise(records, read_summary(run_dir / "run_summary.json"), args.warmup),
    }
    if rc != 0 or not records:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print(
            f"[{variant.name}] failed (exit {rc}); the end of {log_path}:", *tail, sep="\n", file=sys.stderr
        )
    else:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a 1.5B state is ~19 GB
    return result


def fmt(value, spec: str, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if pct else format(value, spec)


def table(results: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in results:
        failed = r["returncode"] != 0 or not r["steps"]
        cells = [
            r["variant"],
            f"failed (exit {r['returncode']})" if failed else fmt(r["median_step_s"], ".4f"),
            fmt(r["tokens_per_s_per_device"], ".0f"),
            fmt(r["mfu"], "", pct=True),
            fmt(r["tflops"], ".3g"),
            fmt(r["peak_memory_gib"], ".1f"),
            fmt(r["compile_s"], ".1f"),
            fmt(r["time_to_first_step_s"], ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_table(text: str) -> list[dict]:
    """The rows of a table printed by `table` (any text around it is ignored): {column: cell}."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != len(COLUMNS) or cells[0] in (COLUMNS[0], "---"):
            continue
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


def probe_environment() -> dict:
    """`_results.environment()` from a child process: this one never starts the accelerator."""
    script = Path(__file__).resolve().parent / "_results.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        import platform

        import jax
        import jaxlib

        return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/bench_1p5b.py")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these variants of the default plan")
    parser.add_argument("--small", action="store_true", help="a tiny model on CPU: " + " ".join(SMALL))
    parser.add_argument("--steps", type=int, help="training steps per variant (default 60; 6 with --small)")
    parser.add_argument(
        "--warmup", type=int, help="steps left out of the medians (default 5; 1 with --small)"
    )
    parser.add_argument(
        "--checkpoint_every", type=int, help="save every N steps, 0 = never (default 50; 3 with --small)"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per variant")
    parser.add_argument(
        "--workdir", help="where run folders and data go (default: a temporary folder, removed)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--write", metavar="RESULTS_MD", help="append the table to this file")
    args = parser.parse_args(argv)
    args.steps = args.steps or (6 if args.small else 60)
    args.warmup = (1 if args.small else 5) if args.warmup is None else args.warmup
    args.checkpoint_every = (
        (3 if args.small else 50) if args.checkpoint_every is None else args.checkpoint_every
    )

    common = [*(SMALL if args.small else ()), *args.overrides]
    base = load_config(args.config, common, log=lambda *_: None)  # a bad --set fails here, once
    if args.variant:
        variants = [Variant(v, tuple(x for x in v.split(",") if x)) for v in args.variant]
    else:
        variants = default_plan(base.data.seq_len, base.data.micro_bsz)
        if args.only:
            unknown = set(args.only) - {v.name for v in variants}
            if unknown:
                parser.error(
                    f"--only: no variant {sorted(unknown)}; the plan has {[v.name for v in variants]}"
                )
            variants = [v for v in variants if v.name in args.only]

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="train_throughput_"))
    try:
        results = [run_variant(args, v, common, workdir) for v in variants]
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    env = probe_environment()
    for key in ("device_kind", "devices"):  # the runs' own summary when the probe could not say
        env.setdefault(key, next((r[key] for r in results if r[key] is not None), "?"))
    d, m = base.data, base.model
    notes = [
        f"Config {args.config} ({m.num_layers} layers, hidden {m.hidden_size}, vocab {m.vocab_size}, "
        f"seq {d.seq_len} x micro_bsz {d.micro_bsz} x micro_num {d.micro_num}, {m.dtype})"
        + (f" with {' '.join(common)}" if common else "")
        + f"; {args.steps} steps per variant, medians over the steps after {args.warmup}; "
        + (
            f"checkpoints every {args.checkpoint_every} steps."
            if args.checkpoint_every
            else "no checkpoints."
        ),
        "Each variant is `python -m internevo_jax.train` in its own process; variants: "
        + "; ".join(f"{v.name} = {' '.join(v.overrides)}" for v in variants)
        + ". Peak memory, compile and time to first step come from run_summary.json (n/a without it).",
    ]
    command = _results.command_line("benchmarks/train_throughput.py", argv)
    title = f"Training throughput, real CLI, on {env['device_kind']}"
    text = _results.section(title, command, env, notes, table(results))
    print(text)
    if args.write:
        _results.append(args.write, text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"results": results, "environment": env}, f, indent=2)
    return 0 if all(r["returncode"] == 0 and r["steps"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
