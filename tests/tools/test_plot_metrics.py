"""tools/plot_metrics.py: PNGs of each metric with runs overlaid, and one-paragraph errors."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402

from internevo_jax.monitor.plots import PLOTS, load_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STEMS = [stem for _, stem, _, _ in PLOTS]
# matplotlib's first two default line colours (C0, C1)
BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def load_tool():
    spec = importlib.util.spec_from_file_location("plot_metrics", ROOT / "tools" / "plot_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(step: int, scale: float = 1.0) -> dict:
    """A training record shaped like the trainer's (internevo_jax/monitor/record.py keys)."""
    return {
        "tflops": 1.0,
        "step": step,
        "loss": scale * (8.0 - math.log(step)),
        "tgs (tokens/gpu/second)": 1000.0 * scale + 50 * (step % 3),
        "lr": 1e-3 * min(1.0, step / 5) * scale,
        "loss_scale": 65536.0 * 2 ** (step // 10),
        "grad_norm": scale / step,
        "micro_num": 2,
        "mfu": None,
        "tokens/en": 512.0,
        "moe_load": [[0.5, 0.5]],
    }


def write_run(folder: Path, records: list[dict], *, newline_at_end: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(r) for r in records)
    (folder / "metrics.jsonl").write_text(text + ("\n" if newline_at_end else ""))
    return folder


def colour_pixels(image: np.ndarray, rgb: tuple[int, int, int]) -> int:
    pixels = (image[..., :3] * 255).round().astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= 8).sum())


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = load_tool().main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_two_runs_overlaid_in_each_metric_png(tmp_path, capsys):
    a = write_run(tmp_path / "run_a", [record(s) for s in range(1, 41)])
    validation = {"step": 20, "val/en_loss": 5.0, "val/en_acc": 0.2, "val/en_plex": 148.4}
    b = write_run(tmp_path / "run_b", [record(s, scale=1.3) for s in range(1, 31)] + [validation])
    out = tmp_path / "plots"
    code, stdout, err = run_main(capsys, a, b, "--out", out)
    assert code == 0, err
    assert sorted(Path(p).name for p in stdout.split()) == sorted(f"{s}.png" for s in [*STEMS, "validation"])
    for stem in STEMS:
        image = matplotlib.image.imread(out / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, stem
        distinct = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(distinct) > 50, (stem, len(distinct))  # axes, text, anti-aliased lines
        assert colour_pixels(image, BLUE) > 100, stem  # run_a
        assert colour_pixels(image, ORANGE) > 100, stem  # run_b
    validation_png = matplotlib.image.imread(out / "validation.png")
    assert colour_pixels(validation_png, BLUE) > 10  # run_b's one validation set


def test_one_run_defaults_to_its_plots_folder(tmp_path, capsys):
    run = write_run(tmp_path / "run", [record(s) for s in range(1, 6)])
    code, stdout, err = run_main(capsys, run)
    assert code == 0, err
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(f"{s}.png" for s in STEMS)


def test_resumed_run_last_record_of_a_step_wins(tmp_path):
    # steps 1-6, then a resume from the checkpoint of step 4 logs 5 and 6 again (with other values)
    first = [record(s) for s in range(1, 7)]
    again = [dict(record(s), loss=100.0 + s) for s in (5, 6, 7)]
    validation = {"step": 4, "val/en_loss": 3.0}
    run = load_run(write_run(tmp_path / "run", [*first, validation, *again]))
    assert sorted(run.steps) == [1, 2, 3, 4, 5, 6, 7]
    steps, losses = run.series("loss")
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    assert losses[4:] == [105.0, 106.0, 107.0]
    assert run.series("val/en_loss", validation=True) == ([4], [3.0])
    assert math.isnan(run.series("mfu")[1][0])  # null (NaN in the run) stays a gap


def test_live_run_unfinished_last_line_is_skipped(tmp_path):
    folder = write_run(tmp_path / "run", [record(1), record(2)])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 7.')
    assert sorted(load_run(folder).steps) == [1, 2]


def test_missing_folder(tmp_path, capsys):
    code, _, err = run_main(capsys, tmp_path / "nope", "--out", tmp_path / "p")
    assert code == 2
    assert "nope does not exist" in err and "metrics.jsonl" in err
    assert len(err.strip().splitlines()) == 1


def test_folder_without_metrics(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    code, _, err = run_main(capsys, tmp_path / "empty_run", "--out", tmp_path / "p")
    assert code == 2
    assert "empty_run has no metrics.jsonl" in err


def test_empty_file(tmp_path, capsys):
    run = write_run(tmp_path / "run", [])
    (run / "metrics.jsonl").write_text("")
    code, _, err = run_main(capsys, run, "--out", tmp_path / "p")
    assert code == 2
    assert f"{run / 'metrics.jsonl'} is empty" in err


@pytest.mark.parametrize(
    "bad, what",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "is a JSON list"),
        ('{"loss": 1.0}', 'no integer "step"'),
    ],
)
def test_corrupt_line_names_file_and_line(tmp_path, capsys, bad, what):
    run = write_run(tmp_path / "run", [record(1)])
    with open(run / "metrics.jsonl", "a") as f:
        f.write(bad + "\n" + json.dumps(record(3)) + "\n")
    code, _, err = run_main(capsys, run, "--out", tmp_path / "p")
    assert code == 2
    assert f"{run / 'metrics.jsonl'}, line 2," in err and what in err
    assert not (tmp_path / "p").exists()


def test_unwritable_out(tmp_path, capsys):
    run = write_run(tmp_path / "run", [record(1), record(2)])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run_main(capsys, run, "--out", blocker / "plots")
    assert code == 2
    assert err.startswith(f"error: cannot write to {blocker / 'plots'}: ")


def test_without_matplotlib_cli_says_what_to_install(tmp_path):
    """The CLI as a user runs it, with matplotlib unimportable: one line, exit 2, no traceback."""
    run = write_run(tmp_path / "run", [record(1), record(2)])
    block = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['plot_metrics.py', {str(run)!r}, '--out', {str(tmp_path / 'p')!r}]; "
        f"runpy.run_path({str(ROOT / 'tools' / 'plot_metrics.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pip install 'internevo_jax[plot]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "p").exists()
