"""Run every config file of an InternEvo checkout through the trainer, shrunk to tiny sizes.

    python tools/check_internevo_configs.py INTERNEVO/configs [--tokenizer tokenizer.model]
        [--steps 2] [--out results.md] [--only NAME ...]

Each file (the `_base_` folder aside) gets a tail appended that keeps its model type, layout modes
and options but shrinks the sizes: 4 layers of width 64, vocabulary 256, 2 steps of mock data (or a
small text folder for streaming / "hf" data, tokenized with --tokenizer), parallel sizes of at most
2, no checkpoint to load or save. It then trains through the command line on 8 CPU devices and is
reported as: runs (exit 0, the losses), refused (exit 2: the one-paragraph reason) or FAILED
(anything else, e.g. a traceback). The Markdown table is printed (and written to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Appended to each config: tiny sizes that keep the file's own choices (model type, tensor modes,
# GQA, head_dim, experts, activation checkpointing) and a layout that fits 8 CPU devices.
TAIL = """
# ---- appended by tools/check_internevo_configs.py: tiny sizes for 8 CPU devices
_heads, _kv_heads = model.get("num_attention_heads"), model.get("num_kv_attention_heads")
model.update(num_layers=4, hidden_size=64, num_attention_heads=4, vocab_size=256, dtype="torch.float32")
if _kv_heads not in (None, _heads):
    model["num_kv_attention_heads"] = 2  # grouped-query attention stays grouped
elif _kv_heads is not None:
    model["num_kv_attention_heads"] = 4
if model.get("head_dim") is not None:
    model["head_dim"] = 16
if model.get("num_experts", 1) > 1:
    model["num_experts"] = min(model["num_experts"], 8)
    model["top_k"] = min(model.get("top_k", 2), 2)
for _key in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
    if _key in model:
        model[_key] = 64
data.update(seq_len=32, micro_num=2, micro_bsz=1, total_steps=STEPS, min_length=0, valid_folder=None,
            valid_every=0, num_worker=0)
if data.get("type", "tokenized") in ("streaming", "hf"):
    data.update(train_folder=TEXT_FOLDER, tokenizer_path=TOKENIZER)
    model["vocab_size"] = TOKENIZER_VOCAB  # the ids the tokenizer produces must fit
else:
    data.update(train_folder=None)
ckpt.update(load_ckpt_info=None, load_ckpt_folder=None, load_model_only_folder=None, enable_save_ckpt=False,
            auto_resume=False)
if "lr_scheduler" in dir():
    lr_scheduler["total_steps"] = STEPS


def _small(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return min(value, 2)
    if isinstance(value, dict) and isinstance(value.get("size"), int):
        return {**value, "size": min(value["size"], 2)}
    return value


parallel = dict(parallel) if "parallel" in dir() else {}
for _key in ("tensor", "pipeline", "weight", "expert", "expert_weight"):
    if _key in parallel:
        parallel[_key] = _small(parallel[_key])
if isinstance(parallel.get("zero1"), dict):
    parallel["zero1"] = {**parallel["zero1"], "size": -1}
elif "zero1" in parallel:
    parallel["zero1"] = -1
run_dir = RUN_DIR
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="InternEvo's configs/ folder")
    p.add_argument("--tokenizer", help="sentencepiece .model for configs that stream raw text")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", help="write the Markdown table here too")
    p.add_argument("--only", nargs="*", help="file names to check (default: all)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per file")
    return p.parse_args(argv)


def config_files(folder: Path, only=None) -> list[Path]:
    """The config files of an InternEvo configs/ folder, without its `_base_` building blocks."""
    files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))  # nor our own copies
    return [p for p in files if not only or p.name in only]


def _text_folder(work: Path) -> Path:
    folder = work / "text" / "en"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"text": f"Sample {i}: the quick brown fox jumps over the lazy dog. " * 4})
        for i in range(200)
    ]
    (folder / "part.jsonl").write_text("\n".join(lines) + "\n")
    return folder.parent


def _vocab_size(tokenizer: str | None) -> int:
    if tokenizer is None:
        return 256
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=tokenizer).vocab_size()


def shrunk_config(source: Path, work: Path, *, steps: int, tokenizer: str | None) -> Path:
    """A copy of `source` beside it (so its relative `_base_` imports still resolve) with TAIL."""
    text = source.read_text(encoding="utf-8")
    values = {
        "STEPS": repr(steps),
        "TEXT_FOLDER": repr(str(_text_folder(work))),
        "TOKENIZER_VOCAB": repr(_vocab_size(tokenizer)),
        "TOKENIZER": repr(tokenizer),
        "RUN_DIR": repr(str(work / "run")),
    }
    tail = TAIL
    for name, value in values.items():
        tail = tail.replace(name, value)
    target = source.parent / f"_shrunk_{source.name}"
    target.write_text(text + "\n" + tail, encoding="utf-8")
    return target


def check(source: Path, *, steps: int, tokenizer: str | None, timeout: int) -> dict:
    """Train one shrunk config through the CLI; {"file", "result", "detail"}."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = shrunk_config(source, work, steps=steps, tokenizer=tokenizer)
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "internevo_jax.train", "--config", str(config), "--launcher", "local"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"file": source.name, "result": "FAILED", "detail": f"no end after {timeout} s"}
        finally:
            config.unlink(missing_ok=True)
        log = done.stdout + done.stderr
        if done.returncode == 0:
            losses = _losses(work / "run" / "metrics.jsonl")
            detail = "losses " + ", ".join(f"{x:.3f}" for x in losses)
            return {"file": source.name, "result": "runs", "detail": detail}
        last = [line for line in log.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        reason = last[0].split(" ERROR ", 1)[-1].strip()
        reason = reason.replace(str(config), source.name).replace(config.name, source.name)
        result = "refused" if done.returncode == 2 and "Traceback" not in log else "FAILED"
        return {"file": source.name, "result": result, "detail": reason}


def _losses(path: Path) -> list[float]:
    if not path.exists():
        return []
    return [json.loads(x)["loss"] for x in path.read_text().splitlines() if '"loss"' in x]


def table(rows: list[dict]) -> list[str]:
    out = ["| file | result | detail |", "|---|---|---|"]
    for r in rows:
        out.append(f"| `{r['file']}` | {r['result']} | {r['detail'].replace('|', '/')} |")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"{folder}: not a folder; pass InternEvo's configs/ folder.", file=sys.stderr)
        return 2
    rows = []
    for source in config_files(folder, args.only):
        rows.append(check(source, steps=args.steps, tokenizer=args.tokenizer, timeout=args.timeout))
        print(f"{rows[-1]['file']}: {rows[-1]['result']}", file=sys.stderr, flush=True)
    lines = table(rows)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 1 if any(r["result"] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
