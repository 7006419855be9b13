"""Storage that fails under a save, and damaged checkpoints: one paragraph naming the folder or file
and the fix, exit status 2 from the CLI, nothing left half-written, no thread holding the exit.

Read-only folders and full disks are small tmpfs mounts in a private mount namespace (`unshare -rm`),
so the tests skip where user namespaces are not available.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from ckpt_helpers import REPO, S3_ENV, cli_command, cli_env, make_bucket, make_state, tiny_config

from internevo_jax.checkpoint import MARKER, CheckpointError, build_checkpoint_manager
from internevo_jax.data import DataError
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext

# The model and data of ckpt_helpers.TINY: about 1 MB per checkpoint, so a 1500k tmpfs holds one.
CLI_TINY = """
JOB_NAME = "ckpt_faults"
data = dict(seq_len=32, micro_num=2, micro_bsz=1, total_steps=12, train_folder=None, min_length=0)
model_type = "INTERNLM"
model = dict(checkpoint=False, num_attention_heads=2, vocab_size=128, hidden_size=32, num_layers=2,
             mlp_ratio=2, dtype="torch.float32", use_flash_attn=False, num_chunks=1)
parallel = dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1))
adam = dict(lr=1e-2)
lr_scheduler = dict(total_steps=12, warmup_ratio=0.1)
ckpt = dict(enable_save_ckpt=True, checkpoint_every=2)
"""

HANG_LIMIT_S = 240  # a run that has not ended by then is hanging (an orbax thread holding the exit)


@pytest.fixture(scope="module")
def namespaces():
    if shutil.which("unshare") is None or sys.platform != "linux":
        pytest.skip("needs unshare to mount a small tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not available here")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "faults.py"
    path.write_text(CLI_TINY)
    return path


def _in_namespace(script: str, env: dict, timeout: float = HANG_LIMIT_S) -> tuple[int, str, float]:
    """Run `script` (sh) in a private mount namespace; (exit status, output, seconds). A run still
    going after `timeout` is killed and fails the test as a hang."""
    start = time.time()
    proc = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the run did not end within {timeout:.0f} s (it hangs):\n{out[-3000:]}")
    return proc.returncode, out, time.time() - start


def _cli(config_file, run_dir, sets) -> str:
    return shlex.join(cli_command(config_file, run_dir, sets))


def _one_paragraph_error(out: str) -> str:
    """The `error: ...` line of a CLI run; the run printed no traceback of its own or orbax's."""
    assert "Traceback" not in out and "ERROR:absl" not in out, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out[-4000:]
    return errors[0]


def _leftovers(folder) -> list[str]:
    """Half-written saves in a save folder: orbax's temporary folders and step folders without the marker."""
    out = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if ".orbax-checkpoint-tmp" in name or (
            name.isdigit() and not os.path.exists(os.path.join(path, MARKER))
        ):
            out.append(name)
    return out


# -- a read-only save folder ----------------------------------------------------------------------
def test_read_only_save_folder_is_refused_at_start(namespaces, config_file, tmp_path, jax_cache_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    cli = _cli(config_file, tmp_path / "run", [f"ckpt.save_ckpt_folder='local:{disk}/ckpts'"])
    script = (
        f"mount -t tmpfs -o size=2m tmpfs {disk} && mkdir {disk}/ckpts && "
        f"mount -o remount,ro {disk} && exec {cli}"
    )
    rc, out, _ = _in_namespace(script, cli_env(cache_dir=jax_cache_dir))
    assert rc == 2, out[-4000:]
    error = _one_paragraph_error(out)
    assert f"Cannot write to the checkpoint folder {disk}/ckpts: Read-only file system" in error
    assert "ckpt.save_ckpt_folder" in error
    assert "tflops" not in out  # refused before the first step


def test_unwritable_snapshot_folder_is_refused_at_start_when_snapshots_are_on(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    snapshots = dict(snapshot_ckpt_folder=str(blocker / "snap"), checkpoint_every=4)
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=str(tmp_path / "ckpts"), oss_snapshot_freq=2, **snapshots))
    with pytest.raises(CheckpointError) as err:
        build_checkpoint_manager(cfg, str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"Cannot create the snapshot folder {blocker}/snap: ")
    assert "ckpt.snapshot_ckpt_folder" in message and "\n" not in message
    # without oss_snapshot_freq the folder is never written, so it is not checked
    unchecked = tiny_config(ckpt=dict(save_ckpt_folder=str(tmp_path / "ckpts"), **snapshots))
    build_checkpoint_manager(unchecked, str(tmp_path)).finalize()


FAIL_AFTER_PROBE = textwrap.dedent("""
    import subprocess, sys, threading
    sys.path[:0] = [{repo!r}, {helpers!r}]
    from ckpt_helpers import make_state, tiny_config
    from internevo_jax.checkpoint import CheckpointError, build_checkpoint_manager
    from internevo_jax.trainer.state import TrainContext
    disk = sys.argv[1]
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=disk + "/ckpts", checkpoint_every=1))
    state, _, loader = make_state(cfg, perturb=0.1)
    manager = build_checkpoint_manager(cfg, disk)  # the write probe passes
    subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
    ctx = TrainContext()
    try:
        try:
            for step in map(int, sys.argv[2].split(",")):
                ctx.step = step
                manager.maybe_save(state, ctx, loader)
        finally:
            manager.finalize()
    except CheckpointError as err:
        print("ERROR:", err)
    print("THREADS:", sorted(t.name for t in threading.enumerate() if not t.daemon))
""")


# "1": the last save of the run fails, and finalize() must raise it (not only log it: the run would
# exit 0); "1,2": the next save raises it
@pytest.mark.parametrize("steps", ["1", "1,2"])
def test_folder_made_read_only_after_the_probe_fails_the_save_without_hanging(namespaces, tmp_path, steps):
    script_file = tmp_path / "ro.py"
    script_file.write_text(FAIL_AFTER_PROBE.format(repo=REPO, helpers=os.path.dirname(__file__)))
    disk = tmp_path / "disk"
    disk.mkdir()
    env = cli_env()
    rc, out, _ = _in_namespace(
        f"mount -t tmpfs -o size=2m tmpfs {disk} && exec {sys.executable} {script_file} {disk} {steps}", env
    )
    assert rc == 0, out[-4000:]
    assert "Traceback" not in out and "ERROR:absl" not in out and "never awaited" not in out, out[-4000:]
    error = next(line for line in out.splitlines() if line.startswith("ERROR: "))
    assert f"Saving the checkpoint of step 1 to local:{disk}/ckpts/1 failed" in error
    assert "Read-only file system" in error and "no complete checkpoint exists yet" in error
    assert "Make the folder writable again" in error
    assert "THREADS: ['MainThread']" in out  # no orbax thread is left to hold the exit


@pytest.mark.slow
def test_folder_turning_read_only_mid_run_ends_the_cli(namespaces, config_file, tmp_path, jax_cache_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    cli = _cli(
        config_file,
        tmp_path / "run",
        [
            f"ckpt.save_ckpt_folder='local:{disk}/ckpts'",
            "data.total_steps=400",
            "lr_scheduler.total_steps=400",
            "ckpt.keep_last_n=2",
        ],
    )
    # the first checkpoint is saved, then the file system turns read-only under the running job
    script = (
        f"mount -t tmpfs -o size=20m tmpfs {disk} && ({cli} & pid=$!; "
        f"while [ ! -e {disk}/ckpts/2/{MARKER} ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
        # a remount while a file is open for writing is refused (busy): try again until it takes
        f"until mount -o remount,ro {disk} 2>/dev/null || ! kill -0 $pid 2>/dev/null; do sleep 0.01; done; "
        f"wait $pid)"
    )
    rc, out, seconds = _in_namespace(script, cli_env(cache_dir=jax_cache_dir))
    assert rc == 2, out[-4000:]
    error = _one_paragraph_error(out)
    assert "Read-only file system" in error and f"to local:{disk}/ckpts/" in error
    assert f"the newest complete checkpoint is still local:{disk}/ckpts/" in error
    assert "Make the folder writable again" in error
    assert seconds < HANG_LIMIT_S


# -- a full disk -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_disk_full_through_the_cli_keeps_the_previous_checkpoint(
    namespaces, config_file, tmp_path, jax_cache_dir
):
    disk = tmp_path / "disk"
    disk.mkdir()
    kept = tmp_path / "kept"
    cli = _cli(config_file, tmp_path / "run", [f"ckpt.save_ckpt_folder='local:{disk}/ckpts'"])
    # the tmpfs is gone with the namespace: copy what the run left there out of it
    script = f"mount -t tmpfs -o size=1500k tmpfs {disk} && {cli}; rc=$?; cp -a {disk}/ckpts {kept}; exit $rc"
    rc, out, _ = _in_namespace(script, cli_env(cache_dir=jax_cache_dir))
    assert rc == 2, out[-4000:]
    error = _one_paragraph_error(out)
    assert "The disk is full (No space left on device) while saving the checkpoint of step 4" in error
    assert f"the newest complete checkpoint is still local:{disk}/ckpts/2" in error
    assert "the half-written save was removed" in error
    assert _leftovers(kept) == [] and sorted(os.listdir(kept)) == ["2"]

    # the kept checkpoint is whole: auto_resume takes it
    cfg = tiny_config(ckpt=dict(enable_save_ckpt=False, save_ckpt_folder=str(kept), auto_resume=True))
    state, shardings, loader = make_state(cfg)
    manager = build_checkpoint_manager(cfg, str(tmp_path))
    ctx = TrainContext()
    try:
        load_at_start(cfg, manager, state, shardings, ctx, loader)
    finally:
        manager.finalize()
    assert ctx.step == 2 and loader.state()["step"] == 2


@pytest.mark.slow
def test_s3_staging_read_only_or_full(namespaces, config_file, tmp_path, s3_endpoint, jax_cache_dir):
    make_bucket(s3_endpoint, "faults")
    env = cli_env({**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}, cache_dir=jax_cache_dir)
    disk = tmp_path / "disk"
    disk.mkdir()
    staging = disk / "internevo_jax" / "faults" / "run"
    sets = ["ckpt.save_ckpt_folder=boto3:s3://faults/run", f"ckpt.async_upload_tmp_folder={disk}"]

    # read-only: refused at start by the probe in the staging folder
    cli = _cli(config_file, tmp_path / "run_ro", sets)
    script = (
        f"mount -t tmpfs -o size=2m tmpfs {disk} && mkdir -p {staging} && mount -o remount,ro {disk} && "
        f"exec {cli}"
    )
    rc, out, _ = _in_namespace(script, env)
    assert rc == 2, out[-4000:]
    error = _one_paragraph_error(out)
    assert f"Cannot write to the staging folder {staging}: Read-only file system" in error
    assert "ckpt.async_upload_tmp_folder" in error

    # full: too small for one staged checkpoint; the staged half is removed
    left = tmp_path / "left"
    cli = _cli(config_file, tmp_path / "run_full", sets)
    script = f"mount -t tmpfs -o size=500k tmpfs {disk} && {cli}; rc=$?; cp -a {staging} {left}; exit $rc"
    rc, out, _ = _in_namespace(script, env)
    assert rc == 2, out[-4000:]
    error = _one_paragraph_error(out)
    assert "The disk is full (No space left on device) while saving the checkpoint of step 2" in error
    assert f"(staged in {staging})" in error and "no complete checkpoint exists yet" in error
    assert _leftovers(left) == []
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in out


# -- damaged checkpoints -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A save folder with one complete checkpoint of step 4 (micro_num=2)."""
    root = tmp_path_factory.mktemp("saved")
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=str(root / "ckpts"), checkpoint_every=4))
    state, _, loader = make_state(cfg, perturb=0.1)
    manager = build_checkpoint_manager(cfg, str(root))
    manager.maybe_save(state, TrainContext(step=4), loader)
    manager.finalize()
    return root / "ckpts"


def _load(path, overrides=(), content=("all",), **data):
    cfg = tiny_config(
        overrides,
        data=data,
        ckpt=dict(
            enable_save_ckpt=False, auto_resume=False, load_ckpt_info=dict(path=str(path), content=content)
        ),
    )
    state, shardings, loader = make_state(cfg)
    manager = build_checkpoint_manager(cfg, "unused")
    ctx = TrainContext()
    try:
        load_at_start(cfg, manager, state, shardings, ctx, loader)
    finally:
        manager.finalize()
    return ctx


def _largest(folder):
    names = os.listdir(folder)
    return os.path.join(folder, max(names, key=lambda n: os.path.getsize(os.path.join(folder, n))))


def _delete(path):
    os.remove(path)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(10)


def _garbage(path):
    with open(path, "w") as f:
        f.write("{not json")


DAMAGES = {
    # (which file, what to do to it, what the message must name)
    "deleted_data_file": (lambda s: _largest(s / "model" / "d"), _delete, "the file model/d/"),
    "truncated_data_file": (
        lambda s: _largest(s / "optimizer" / "ocdbt.process_0" / "d"),
        _truncate,
        "stored under optimizer/",
    ),
    "truncated_metadata": (lambda s: s / "model" / "_METADATA", _truncate, "the file model/_METADATA"),
    "deleted_metadata": (lambda s: s / "optimizer" / "_METADATA", _delete, "the file optimizer/_METADATA"),
    "garbage_sampler": (lambda s: s / "sampler" / "metadata", _garbage, "the file sampler/metadata"),
    "garbage_context": (lambda s: s / "context" / "metadata", _garbage, "the file context/metadata"),
    "deleted_context": (lambda s: s / "context" / "metadata", _delete, "the file context/metadata"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_checkpoint_names_the_file_and_the_fix(damage, saved, tmp_path):
    step = tmp_path / "4"
    shutil.copytree(saved / "4", step)
    which, harm, named = DAMAGES[damage]
    harm(which(step))
    with pytest.raises(CheckpointError) as err:
        _load(step)
    text = str(err.value)
    assert f"The checkpoint at local:{step} is corrupt or unreadable" in text
    assert named in text
    assert "ckpt.load_ckpt_info.path" in text and "delete this checkpoint folder" in text
    for noise in ("TensorStore(", "bound method", "tensorstore_spec", "pybind11", "\n"):
        assert noise not in text, text


# -- other data settings than the checkpoint's ------------------------------------------------------
def test_changed_micro_num_names_the_command_line_way(saved):
    with pytest.raises(DataError) as err:
        _load(saved / "4", micro_num=4)
    text = str(err.value)
    assert "micro_num: saved 2, now 4" in text
    command = text.split("on the command line ", 1)[1].split(" (in code", 1)[0]
    assert f"ckpt.load_ckpt_info.path=local:{saved}/4" in command
    # the command's overrides load the checkpoint under the new micro_num, without its data position
    words = shlex.split(command)
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert len(overrides) == 3 and "ckpt.auto_resume=False" in overrides
    ctx = _load("unused", overrides, micro_num=4)
    assert ctx.step == 4
