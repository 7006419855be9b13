"""notebooks/small_run.ipynb: committed without outputs, and runs top to bottom on CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "small_run.ipynb"
STEPS, NEW_TOKENS = 6, 5
# Appended after the notebook's parameters cell, as papermill injects parameters.
TINY = f"""
INSTALL = False
STEPS = {STEPS}
NUM_LAYERS = 1
HIDDEN_SIZE = 64
NUM_HEADS = 4
SEQ_LEN = 64
MICRO_BSZ = 1
MICRO_NUM = 1
VOCAB_SIZE = 1000
MAX_TEXT_BYTES = 100_000
MAX_NEW_TOKENS = {NEW_TOKENS}
import sys
assert sys.prefix == {sys.prefix!r}, sys.prefix  # the kernel runs in the test's environment
"""


def parameters_index(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    params = nb.cells[parameters_index(nb)].source
    # the names the tiny setting overrides are the notebook's parameters
    for line in TINY.strip().splitlines():
        name = line.split(" = ")[0]
        if name.isupper():
            assert f"\n{name} = " in f"\n{params}", name


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow
def test_notebook_runs_on_cpu(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(parameters_index(nb) + 1, nbformat.v4.new_code_cell(TINY))
    # the kernel inherits this environment: CPU only, one device, the checkout importable
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback

    work = tmp_path / "small_run"
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(STEPS))  # InternEvo numbers steps from 0
    assert all(r["loss"] > 0 and r["wall_s"] >= 0 for r in records)  # wall_s: the notebook's callback
    checkpoints = work / "run" / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir()) == [STEPS // 2, STEPS]
    assert all((checkpoints / str(s) / "COMMITTED").exists() for s in (STEPS // 2, STEPS))
    assert sorted(p.name for p in (work / "run" / "plots").iterdir()) == [
        "grad_norm.png",
        "loss.png",
        "loss_scale.png",
        "lr.png",
        "tgs.png",
    ]
    hf = work / "hf"
    assert (hf / "config.json").is_file() and (hf / "tokenizer.model").is_file()
    assert list(hf.glob("*.safetensors"))
    assert json.loads((hf / "config.json").read_text())["num_hidden_layers"] == 1

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(stream_text(c) for c in code_cells)
    assert "reloaded params equal the trained ones: True" in text
    assert "reloads the same params: True" in text
    assert any("image/png" in o.get("data", {}) for c in code_cells for o in c.outputs), "no inline figure"
    ids_lines = [line for line in text.splitlines() if line.startswith("ids:")]
    assert len(ids_lines) == 2 and ids_lines[0] == ids_lines[1]  # the checkpoint, then its HF export
    ids = [i for i in ids_lines[0].removeprefix("ids:").strip().split(",") if i]  # none if EOS came first
    assert len(ids) <= NEW_TOKENS and all(i.isdigit() for i in ids), ids_lines
    assert "the checkpoint and its HF export generate the same tokens: True" in text
