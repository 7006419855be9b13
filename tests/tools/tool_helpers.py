"""Helpers for the CLI tests: run a tool as a subprocess (also with a read-only folder), find the real
tokenizer, train a small one."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

REPO = Path(__file__).resolve().parents[2]
SHARED_TOKENIZERS = REPO / ".." / "shared" / "tokenizers"


def run_tool(name: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def internlm_tokenizer_path() -> Path:
    """The real InternLM tokenizer, or skip the calling test."""
    path = SHARED_TOKENIZERS / "tokenizer_internlm.model"
    if not path.is_file():
        pytest.skip(f"InternLM tokenizer not found at {path}")
    return path.resolve()


def small_tokenizer(path: Path, vocab_size: int = 320) -> tuple[Path, int]:
    """Train a small sentencepiece model (InternLM's special ids, byte fallback) at `path`; returns
    (path, its piece count), which is at most `vocab_size`."""
    from internevo_jax.preprocess.demo_corpus import train_tokenizer

    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "def main():\n    return sum(range(10))",
        "Pack my box with five dozen liquor jugs; then sphinx of black quartz, judge my vow.",
    ] * 20
    path.write_bytes(train_tokenizer(texts, vocab_size))
    return path, spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()


def read_only_available() -> str | None:
    """None when `unshare -rm` can mount a read-only tmpfs here, else why not (for a skip)."""
    if shutil.which("unshare") is None or sys.platform != "linux":
        return "needs unshare (util-linux) on Linux to mount a read-only folder"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        return "user namespaces are not available here"
    return None


def run_read_only(folder: Path, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `argv` with `folder` mounted as an empty read-only tmpfs (in a private mount namespace)."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = f"mount -t tmpfs -o size=1m tmpfs {folder} && mount -o remount,ro {folder}"
    cmd = f"{mount} && exec {' '.join(shlex.quote(str(a)) for a in argv)}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def tiny_checkpoint(folder: Path, vocab_size: int) -> Path:
    """A model-only checkpoint of a 1-layer LLAMA2 with `vocab_size` ids (zero weights) at `folder`."""
    import jax
    import numpy as np

    from internevo_jax.checkpoint.model_files import save_params
    from internevo_jax.config import config_from_dict
    from internevo_jax.model import abstract_params, build_model

    model = dict(num_layers=1, hidden_size=32, num_attention_heads=4, num_kv_attention_heads=2)
    model.update(vocab_size=vocab_size, mlp_ratio=2, multiple_of=16, dtype="torch.float32", no_bias=True)
    cfg = config_from_dict({"model_type": "LLAMA2", "model": model}, "<tiny>", log=lambda *a: None)
    shapes = abstract_params(build_model(cfg))
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32), shapes)
    save_params(str(folder), params, cfg)
    return folder


def call_tools(calls: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """{tool name: (exit code, stderr)} of each tool's main(argv), called in this process."""
    import contextlib
    import importlib.util
    import io

    out = {}
    for name, argv in calls.items():
        spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = module.main([str(a) for a in argv])
        out[name] = (code, err.getvalue())
    return out
