"""Tools whose output folder cannot be written stop with one `error: cannot write to X: ...` line and
exit status 2 (a read-only file system, a path through a regular file); the demo tool names the
smallest vocab_size it can train."""

from __future__ import annotations

import json
import re
import sys

import pytest
from tool_helpers import (
    REPO,
    call_tools,
    read_only_available,
    run_read_only,
    small_tokenizer,
    tiny_checkpoint,
)

# The folder each tool checks, relative to the output root, and the option named in the fix.
EXPECTED = {
    "tokenizer": ("train/en", "--bin_output_path"),
    "alpaca_tokenizer": ("alpaca", "output_path"),
    "build_demo_data": ("demo", "--out"),
    "convert2hf": ("", "--tgt"),  # the folder the export is created in
    "hf2internevo": ("ckpt", "--tgt"),
    "internevo2jax": ("converted", "--tgt"),
    "jax2internevo": ("internevo", "--tgt"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "in.txt").write_text("hello world\n")
    (root / "alpaca.json").write_text(json.dumps([{"instruction": "hi", "input": "", "output": "yo"}]))
    tokenizer, pieces = small_tokenizer(root / "small.model")
    ckpt = tiny_checkpoint(root / "ckpt", pieces)
    (root / "cfg.py").write_text("model_type = 'LLAMA2'\n")
    return root, tokenizer, ckpt


def calls(inputs, out) -> dict[str, list]:
    root, tokenizer, ckpt = inputs
    return {
        "tokenizer": [
            "--text_input_path", root / "in.txt", "--bin_output_path", out / "train/en/data.bin",
            "--tokenizer_path", tokenizer, "--quiet",
        ],
        "alpaca_tokenizer": [root / "alpaca.json", out / "alpaca", tokenizer],
        "build_demo_data": ["--out", out / "demo", "--max_text_bytes", 1000],
        "convert2hf": ["--src", ckpt, "--tgt", out / "hf"],
        "hf2internevo": ["--src", root, "--tgt", out / "ckpt"],
        "internevo2jax": ["--src", root, "--tgt", out / "converted", "--config", root / "cfg.py"],
        "jax2internevo": ["--src", ckpt, "--tgt", out / "internevo"],
    }  # fmt: skip


def check(results, out, reason: str) -> None:
    assert set(results) == set(EXPECTED)
    for name, (code, err) in results.items():
        folder, option = EXPECTED[name]
        where = str(out / folder) if folder else str(out)
        assert code == 2, (name, err)
        assert err.startswith(f"error: cannot write to {where}: {reason}. Pass "), (name, err)
        assert option in err and err.count("\n") == 1 and "Traceback" not in err, (name, err)


def test_output_under_a_regular_file(inputs, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "out"
    check(call_tools(calls(inputs, out)), out, f"{blocker} is a file, not a folder")
    assert blocker.read_text() == ""


def test_output_on_a_read_only_file_system(inputs, tmp_path):
    why = read_only_available()
    if why:
        pytest.skip(why)
    out = tmp_path / "ro"
    spec = json.dumps({k: [str(a) for a in v] for k, v in calls(inputs, out).items()})
    driver = (
        f"import json, sys; sys.path.insert(0, {str(REPO / 'tests' / 'tools')!r}); "
        "from tool_helpers import call_tools; "
        "print('RESULTS', json.dumps(call_tools(json.loads(sys.argv[1]))))"
    )
    proc = run_read_only(out, [sys.executable, "-c", driver, spec])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS "))
    check(json.loads(line[len("RESULTS ") :]), out, "Read-only file system")


@pytest.mark.parametrize("vocab, least", [(300, r"at least (\d+) pieces"), (100, r"more than (259) pieces")])
def test_demo_vocab_too_small_names_the_minimum(tmp_path, vocab, least):
    code, err = call_tools(
        {"build_demo_data": ["--out", tmp_path / "demo", "--vocab_size", vocab, "--max_text_bytes", 60_000]}
    )["build_demo_data"]
    assert code == 2 and err.startswith(f"error: vocab_size={vocab} is too small"), err
    minimum = int(re.search(least, err).group(1))
    assert minimum > vocab and err.count("\n") == 1
    if vocab == 300:
        assert f"Pass --vocab_size {minimum} or more" in err
