"""Helpers for the CLI tests: run a tool as a subprocess, find the real tokenizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
