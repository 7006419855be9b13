"""Plots of runs' metrics.jsonl files: loss, lr, grad_norm, loss_scale and tokens/s against step.

    from internevo_jax.monitor.plots import load_run, plot_runs
    runs = [load_run("runs/a"), load_run("runs/b")]
    paths = plot_runs(runs, "plots/")          # plots/loss.png, plots/lr.png, ... one line per run

`load_run` reads <run_dir>/metrics.jsonl (JsonlWriter's file): training records by step (a resumed
run logs the steps after its checkpoint again: the last record of a step wins) and validation
records (those with val/ keys) apart. `plot_runs` writes one PNG per metric with every run
overlaid, plus validation.png when a run has validation records. Matplotlib is imported only
when plotting (the `plot` extra) and draws with its Agg renderer, without pyplot's global state,
so it works the same in a script, a test and a notebook. Every problem a user can fix raises
PlotError with a one-paragraph message naming the file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from internevo_jax.monitor.record import TGS_KEY
from internevo_jax.writable import check_writable

METRICS_FILE = "metrics.jsonl"

# (record key, PNG file stem, axis label); the y axis is logarithmic for the last two columns' True.
PLOTS = (
    ("loss", "loss", "loss", False),
    ("lr", "lr", "learning rate", False),
    ("grad_norm", "grad_norm", "grad norm (before clipping)", False),
    ("loss_scale", "loss_scale", "loss scale", True),
    (TGS_KEY, "tgs", "tokens / device / second", False),
)
VALIDATION_STEM = "validation"
INSTALL_HINT = "pip install 'internevo_jax[plot]'"


class PlotError(RuntimeError):
    """A problem with the input or output of a plot that the user can fix; the message says how."""


@dataclass
class RunMetrics:
    """One run's records: `steps` maps step -> the last training record logged for it;
    `validation` maps step -> the last validation record (its val/ keys)."""

    name: str
    path: str
    steps: dict[int, dict] = field(default_factory=dict)
    validation: dict[int, dict] = field(default_factory=dict)

    def series(self, key: str, *, validation: bool = False) -> tuple[list[int], list[float]]:
        """(steps, values) of `key` in step order; records without a number for it are left out."""
        records = self.validation if validation else self.steps
        xs, ys = [], []
        for step in sorted(records):
            value = _number(records[step].get(key))
            if value is not None:
                xs.append(step)
                ys.append(value)
        return xs, ys


def _number(value) -> float | None:
    """A finite or NaN float for numbers (null is NaN, as JsonlWriter writes it), None otherwise."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> RunMetrics:
    """Read <run_dir>/metrics.jsonl. A last line without its newline that does not parse is a
    record still being written (a live run) and is skipped; any other bad line is an error."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        what = "is not a folder" if os.path.exists(run_dir) else "does not exist"
        raise PlotError(
            f"The run folder {run_dir} {what}. Pass the run folder of a training run (the run_dir "
            f"of its config, runs/<JOB_NAME> by default), the folder that holds {METRICS_FILE}."
        )
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise PlotError(
            f"{run_dir} has no {METRICS_FILE}: it is not a run folder, or its run has not finished a "
            f"step yet. The trainer writes {path} on process 0 from the first step on."
        )
    run = RunMetrics(name=name or os.path.basename(os.path.normpath(run_dir)), path=run_dir)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"Cannot read {path}: {e}.") from None
    unfinished = lines.pop()  # "" when the file ends with a newline
    for number, line in enumerate(lines, start=1):
        if line.strip():
            _add_record(run, _parse(path, number, line))
    if unfinished.strip():
        try:
            record = json.loads(unfinished)
        except ValueError:
            record = None  # being written
        if record is not None:
            _add_record(run, _check(path, len(lines) + 1, record))
    if not run.steps and not run.validation:
        raise PlotError(
            f"{path} is empty: the run has not logged a step yet. Plot it once its first step is done."
        )
    if not run.steps:
        raise PlotError(f"{path} holds only validation records, no training steps; there is nothing to plot.")
    return run


def _parse(path: str, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError as e:
        raise PlotError(
            f"{path}, line {number}, is not valid JSON ({e}): {line[:80]!r}. Each line of "
            f"{METRICS_FILE} is one JSON object; delete or repair that line."
        ) from None
    return _check(path, number, record)


def _check(path: str, number: int, record) -> dict:
    if not isinstance(record, dict):
        raise PlotError(
            f"{path}, line {number}, is a JSON {type(record).__name__}, not an object of metrics; "
            "delete or repair that line."
        )
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise PlotError(
            f'{path}, line {number}, has no integer "step" (got {step!r}); every record the trainer '
            "writes has one. Delete or repair that line."
        )
    return record


def _add_record(run: RunMetrics, record: dict) -> None:
    step = record["step"]
    if any(k.startswith("val/") for k in record):
        run.validation[step] = record
    else:
        run.steps[step] = record  # a step logged again after a resume: the last record wins


def load_runs(run_dirs) -> list[RunMetrics]:
    """load_run for each folder; names are the folders' names, or their paths where names repeat."""
    dirs = [os.fspath(d) for d in run_dirs]
    if not dirs:
        raise PlotError("No run folder given: pass one or more run folders (each holding metrics.jsonl).")
    names = [os.path.basename(os.path.normpath(d)) for d in dirs]
    names = [os.path.normpath(d) if names.count(n) > 1 else n for d, n in zip(dirs, names)]
    return [load_run(d, name=n) for d, n in zip(dirs, names)]


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotError(f"Plotting needs matplotlib, which is not installed ({e}): {INSTALL_HINT}") from None
    return Figure


def metric_figure(runs: list[RunMetrics], key: str, label: str | None = None, *, log_y: bool = False):
    """A matplotlib Figure of `key` against step, one line per run (None if no run has `key`)."""
    figure_class = _figure_class()
    series = [(run.name, *run.series(key)) for run in runs]
    if not any(xs for _, xs, _ in series):
        return None
    fig = figure_class(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for name, xs, ys in series:
        if xs:
            ax.plot(xs, ys, label=name, marker="." if len(xs) <= 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(label or key)
    ax.set_title(label or key)
    if log_y and all(y > 0 for _, _, ys in series for y in ys if not math.isnan(y)):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def validation_figure(runs: list[RunMetrics]):
    """val/<set>_loss against step, one line per run and validation set (None without any)."""
    figure_class = _figure_class()
    lines = []
    for run in runs:
        keys = sorted(
            {k for r in run.validation.values() for k in r if k.startswith("val/") and k.endswith("_loss")}
        )
        for key in keys:
            xs, ys = run.series(key, validation=True)
            if xs:
                lines.append((f"{run.name} {key[len('val/') : -len('_loss')]}", xs, ys))
    if not lines:
        return None
    fig = figure_class(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for name, xs, ys in lines:
        ax.plot(xs, ys, label=name, marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title("validation loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _prepare_out(out_dir: str) -> None:
    check_writable(out_dir, fix="Pass --out with a folder you can write to.", error=PlotError, create=True)


def plot_runs(runs: list[RunMetrics], out_dir: str | os.PathLike) -> list[str]:
    """Write <out_dir>/<metric>.png for each metric some run has (and validation.png when a run
    has validation records); returns the paths written."""
    out_dir = os.fspath(out_dir)
    _figure_class()  # matplotlib missing: say so before creating anything
    _prepare_out(out_dir)
    figures = [(stem, metric_figure(runs, key, label, log_y=log_y)) for key, stem, label, log_y in PLOTS]
    figures.append((VALIDATION_STEM, validation_figure(runs)))
    written = []
    for stem, fig in figures:
        if fig is None:
            continue
        path = os.path.join(out_dir, f"{stem}.png")
        try:
            fig.savefig(path, format="png")
        except OSError as e:
            raise PlotError(f"cannot write to {out_dir}: {e.strerror or e} ({path}).") from None
        written.append(path)
    return written
