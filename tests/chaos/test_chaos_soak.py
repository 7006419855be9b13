"""Chaos soak: a 200-step run of the demo model through `python -m internevo_jax.train`, with
asynchronous checkpoints every 10 steps to a local S3 server, survives kills, an S3 outage and a full
disk, and ends bit-identical to a run that was never disturbed.

The soak (tests/chaos/chaos_helpers.py) trains configs/demo.py (InternLM, hidden 256, 4 layers,
vocab 2048; seq_len 64, one micro-batch of one row so that a step takes tens of ms on CPU) on a
bin/meta corpus written here, with auto-resume, `ckpt.save_ckpt_folder=boto3:s3://chaos/run`,
`ckpt.checkpoint_every=10`, `ckpt.async_upload=True` and `ckpt.keep_last_n=3`. The S3 server is
`python -m moto.server`, a process of its own; the staging folder (`ckpt.async_upload_tmp_folder`)
is a 400 MiB tmpfs mounted inside `unshare -rm`, where the whole driver runs. Faults land on
observed progress (a step seen in metrics.jsonl, a log line), their steps drawn from a seeded RNG
(`soak_plan`):

- SIGKILL at a random step, in the orbax write of a save (right after "saving checkpoint of step
  N"), in the upload of a save (its staged copy written and its first files in the bucket, no
  "checkpoint of step N complete" yet), at another random step, and a fraction of a second into
  the restore of the restart after that; each followed by a restart that auto-resumes;
- the S3 server SIGSTOPped as a save starts (the port accepts connections, nothing answers) and
  SIGCONTinued seconds later while training goes on;
- the staging tmpfs filled by one big file: the next save meets ENOSPC, the run ends with exit 2 and
  its one-paragraph disk-full message (or reports it and goes on); the file is deleted and the run
  restarted.

The reference is the same config without faults, checkpointing only its last step to a local
folder. Checked: every logged loss (each occurrence of a step, re-done steps included) equals the
reference's for that step; the final checkpoints' model and optimizer arrays, context and sampler
position are bit-identical; each run ends by a planned kill, exit 2 with a disk or storage message
(a fault), or exit 0 (the last); nothing is left in the staging folder at the end (a killed run's
staged copies are removed by the next start); no restart takes longer from process start to its first step than
the reference's start-up and compile plus 30 s. The trainer logs its compile time only in the
summary at the end of a run, which killed runs never reach, so the baseline is the reference run's
own time from process start to its first step (compile included, from a cold compilation cache;
the soak's runs then load the compiled step from that cache). The kill table is printed, written
to <tmp_path>/chaos_table.txt and included in every assertion message.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chaos_helpers import TOTAL_STEPS, TrainerDriver, demo_sets
from ckpt_helpers import cli_env

from internevo_jax.checkpoint import MARKER
from internevo_jax.data import write_bin

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaos_helpers.py")
SEED = 20240611
STAGING_SIZE = "400m"
RESTART_BUDGET_S = 30.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tokenized corpus in InternEvo's layout (train/<type>/<name>.bin + .bin.meta), vocab 2048."""
    root = tmp_path_factory.mktemp("chaos_corpus")
    rng = np.random.default_rng(11)
    for kind, count in (("en", 300), ("code", 200)):
        samples = [rng.integers(3, 2048, size=int(rng.integers(20, 400))).tolist() for _ in range(count)]
        os.makedirs(root / "train" / kind)
        write_bin(root / "train" / kind / "part0.bin", samples)
    return root / "train"


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


def _reference(corpus, tmp_path, jax_cache) -> dict:
    """The undisturbed run: its losses, its time to the first step, its checkpoint of the last step."""
    run_dir = tmp_path / "reference"
    logs = tmp_path / "reference_logs"
    logs.mkdir()
    driver = TrainerDriver(
        run_dir,
        [*demo_sets(str(corpus)), f"ckpt.checkpoint_every={TOTAL_STEPS}"],
        cli_env(cache_dir=jax_cache),
        logs,
    )
    a = driver.start()
    driver.wait_for(lambda: a.first_step_at is not None, "the first step", timeout=600)
    code = driver.wait_exit(timeout=600)
    log = Path(a.log_path).read_text()
    assert code == 0, log[-4000:]
    summary_path = run_dir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {
        "losses": _loss_occurrences(run_dir),
        "first_step_s": a.restart_s,
        "compile_s": summary.get("compile_s"),
        "checkpoint": run_dir / "checkpoints" / str(TOTAL_STEPS),
    }


def _run_soak(spec: dict, tmp_path, use_namespace: bool) -> dict:
    spec_path = tmp_path / "soak_spec.json"
    spec_path.write_text(json.dumps(spec))
    if use_namespace:
        script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" "$4" "$5"'
        cmd = ["unshare", "-rm", "sh", "-c", script, "sh", STAGING_SIZE, spec["staging"]]
    else:
        cmd = []
    cmd += [sys.executable, HELPERS, str(spec_path)]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    log = tmp_path / "soak_driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, f"the soak driver failed ({proc.returncode}):\n{text[-4000:]}"
    return json.loads(open(spec["report"]).read())


# -- reading the results ----------------------------------------------------------------------------
def _loss_occurrences(run_dir) -> list[tuple[int, float]]:
    """(steps done, loss) of every training record of metrics.jsonl, in file order."""
    out = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)  # a line cut or glued by a kill would fail here
            assert isinstance(record, dict), f"metrics.jsonl line {number}: {line[:200]!r}"
            if "loss" in record:
                out.append((record["step"] + 1, record["loss"]))
    return out


def _saved_arrays(checkpoint) -> dict[str, np.ndarray]:
    """Every array of the model and optimizer items of a checkpoint folder, by path, as numpy."""
    import jax
    import orbax.checkpoint as ocp
    from etils import epath

    out = {}
    for item in ("model", "optimizer"):
        path = epath.Path(os.path.join(checkpoint, item))
        meta = ocp.StandardCheckpointHandler().metadata(path).tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        with ocp.PyTreeCheckpointer() as ckptr:
            tree = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
        for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[f"{item}{jax.tree_util.keystr(keys)}"] = np.asarray(leaf)
    return out


def _json_item(checkpoint, item: str) -> dict:
    with open(os.path.join(checkpoint, item, "metadata")) as f:
        return json.load(f)


def _table(report: dict, reference: dict) -> str:
    base = reference["first_step_s"]
    head = (
        f"{'run':>3}  {'resumed':>7}  {'1st step':>8}  {'-ref':>6}  {'ended by':<34} {'step':>4}  "
        f"{'in flight at the end':<72} {'exit':>4}"
    )
    rows = [
        f"chaos soak: seed {SEED}, reference first step after {base:.1f} s "
        f"(logged compile {reference['compile_s']} s), restart budget reference + {RESTART_BUDGET_S:.0f} s",
        head,
        "-" * len(head),
    ]
    for a in report.get("attempts", []):
        resumed = {None: "?", 0: "scratch"}.get(a["resumed_from"], str(a["resumed_from"]))
        first = f"{a['restart_s']:.1f}s" if a["restart_s"] is not None else "-"
        over = f"{a['restart_s'] - base:+.1f}" if a["restart_s"] is not None else "-"
        exit_code = "" if a["exit_code"] is None else str(a["exit_code"])
        rows.append(
            f"{a['attempt']:>3}  {resumed:>7}  {first:>8}  {over:>6}  {a['ended_by'][:34]:<34} "
            f"{a['end_step'] if a['end_step'] is not None else '-':>4}  {a['in_flight'][:72]:<72} {exit_code:>4}"
        )
    rows.append("faults:")
    for e in report.get("events", []):
        rows.append(
            "  "
            + ", ".join(
                f"{k}={v}" for k, v in e.items() if k in ("fault", "attempt", "step", "in_flight", "outcome")
            )
        )
    for a in report.get("attempts", []):
        if a["after_error_lines"]:
            rows.append(
                f"note: run {a['attempt']} printed {a['after_error_lines']} more lines after its error message, "
                f"first {a['after_error'][0][:100]!r}"
            )
    if report.get("bucket"):
        rows.append(f"bucket at the end: {report['bucket']}")
    if report.get("staging_left"):
        rows.append(f"left in the staging folder: {report['staging_left'][:10]}")
    if report.get("error"):
        rows.append(f"SOAK ERROR: {report['error']}")
    rows.append(f"soak wall time {report.get('wall_s', 0):.0f} s")
    return "\n".join(rows)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_chaos_soak(corpus, tmp_path):
    jax_cache = tmp_path / "jax_cache"
    reference = _reference(corpus, tmp_path, jax_cache)
    ref_losses = dict(reference["losses"])
    assert sorted(ref_losses) == list(range(1, TOTAL_STEPS + 1))

    use_namespace = _namespaces_work()
    staging = tmp_path / "staging"
    staging.mkdir()
    spec = {
        "seed": SEED,
        "train_folder": str(corpus),
        "run_dir": str(tmp_path / "soak"),
        "staging": str(staging),
        "disk_fault": use_namespace,
        "jax_cache": str(jax_cache),
        "out_dir": str(tmp_path / "soak_out"),
        "report": str(tmp_path / "soak_report.json"),
        "marker": MARKER,
    }
    report = _run_soak(spec, tmp_path, use_namespace)
    table = _table(report, reference)
    (tmp_path / "chaos_table.txt").write_text(table + "\n")
    print("\n" + table)
    details = f"\n{table}\n(report: {spec['report']}, logs: {spec['out_dir']}/logs)"
    assert report["error"] is None, details
    problems = _check_faults(report, use_namespace) + _check_restarts(report, reference)
    problems += _check_results(report, spec["run_dir"], reference)
    assert not problems, "\n".join(problems) + details


def _check_faults(report: dict, use_namespace: bool) -> list[str]:
    """Enough kills, in the right places; every run ended by a planned kill, a fault's
    one-paragraph message (exit 2) or success (the last)."""
    problems = []
    attempts, events = report["attempts"], report["events"]
    kills = [e for e in events if e["fault"].startswith("kill")]
    if len(kills) < 5:
        problems.append(f"only {len(kills)} kills")
    for phase in ("save", "upload"):
        if not any(e["phase"] == phase for e in kills):
            problems.append(f"no kill landed in a {phase}")
    if not any(e["fault"].startswith("S3 server stopped") for e in events):
        problems.append("no S3 outage")
    if use_namespace and not any(e["fault"].startswith("disk full from") for e in events):
        problems.append("the disk was not filled")
    for a in attempts[:-1]:
        run = f"run {a['attempt']} ({a['ended_by']})"
        if a["ended_by"].startswith("kill"):
            if a["exit_code"] != -signal.SIGKILL:
                problems.append(f"{run}: exit code {a['exit_code']} after SIGKILL")
            continue
        message = a["error"].strip()
        if a["exit_code"] != 2 or a["traceback"]:
            problems.append(
                f"{run} ended with exit code {a['exit_code']}"
                f"{' and a traceback' if a['traceback'] else ''} instead of exit 2 and a one-paragraph "
                f"message (log {a['log']})"
            )
        elif not ("disk is full" in message.lower() or "s3" in message.lower()):
            problems.append(f"{run}: exit 2 with an unexpected message {message!r}")
    # a killed run's staged copies are removed by the next start; the last run deletes its own
    left = [f for f in report.get("staging_left", []) if not f.split(" (")[0].endswith(".shared_probe")]
    if left:
        problems.append(f"left in the staging folder after the last run: {left[:10]}")
    last = attempts[-1]
    if last["exit_code"] != 0 or last["end_step"] != TOTAL_STEPS or last["traceback"]:
        problems.append(
            f"the last run ended with exit code {last['exit_code']} at step {last['end_step']} (log {last['log']})"
        )
    return problems


def _check_restarts(report: dict, reference: dict) -> list[str]:
    """No restart is slower than the reference's start-up and compile plus RESTART_BUDGET_S."""
    limit = reference["first_step_s"] + RESTART_BUDGET_S
    return [
        f"run {a['attempt']} took {a['restart_s']:.1f} s to its first step (limit {limit:.1f} s)"
        for a in report["attempts"][1:]
        if a["restart_s"] is not None and a["restart_s"] > limit
    ]


def _check_results(report: dict, run_dir: str, reference: dict) -> list[str]:
    """Every logged loss (re-done steps included) and the final checkpoint equal the reference's."""
    problems = []
    ref_losses = dict(reference["losses"])
    soak_losses = _loss_occurrences(run_dir)
    missing = sorted(set(ref_losses) - {step for step, _ in soak_losses})
    if missing:
        problems.append(f"steps never logged: {missing[:20]}")
    wrong = [(step, loss, ref_losses.get(step)) for step, loss in soak_losses if loss != ref_losses.get(step)]
    if wrong:
        problems.append(
            f"{len(wrong)} logged losses differ from the reference; (step, soak, reference): {wrong[:5]}"
        )
    final = report.get("final_checkpoint")
    if not final or not os.path.exists(os.path.join(final, MARKER)):
        return [
            *problems,
            f"no complete checkpoint of step {TOTAL_STEPS} in the bucket ({report.get('bucket')})",
        ]
    ours, theirs = _saved_arrays(final), _saved_arrays(reference["checkpoint"])
    if sorted(ours) != sorted(theirs):
        problems.append(f"the final checkpoints hold different arrays: {sorted(set(ours) ^ set(theirs))[:5]}")
    differ = [
        name
        for name in sorted(set(ours) & set(theirs))
        if ours[name].dtype != theirs[name].dtype
        or ours[name].shape != theirs[name].shape
        or ours[name].tobytes() != theirs[name].tobytes()
    ]
    if differ:
        problems.append(
            f"{len(differ)} of {len(theirs)} final arrays differ from the reference: {differ[:5]}"
        )
    for item in ("context", "sampler"):
        if _json_item(final, item) != _json_item(reference["checkpoint"], item):
            problems.append(
                f"final {item}: {_json_item(final, item)} != reference {_json_item(reference['checkpoint'], item)}"
            )
    print(
        f"{len(theirs)} final arrays compared; {len(soak_losses)} losses logged for {len(ref_losses)} steps "
        f"({len(soak_losses) - len(ref_losses)} re-done)"
    )
    return problems
