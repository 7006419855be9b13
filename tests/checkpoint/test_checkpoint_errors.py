"""Every checkpoint problem a user can cause ends in one clear CheckpointError naming the path and fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from ckpt_helpers import REPO, make_state, tiny_config

from internevo_jax.checkpoint import MARKER, CheckpointError, build_checkpoint_manager, parse_location
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A folder with one complete checkpoint of step 4."""
    root = tmp_path_factory.mktemp("good")
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=str(root / "ckpts"), checkpoint_every=4))
    state, _, loader = make_state(cfg, perturb=0.1)
    manager = build_checkpoint_manager(cfg, str(root))
    ctx = TrainContext(step=4)
    manager.maybe_save(state, ctx, loader)
    manager.finalize()
    return root / "ckpts"


def _load(path, content=("all",), **model):
    cfg = tiny_config(
        model=model,
        ckpt=dict(
            enable_save_ckpt=False, auto_resume=False, load_ckpt_info=dict(path=str(path), content=content)
        ),
    )
    state, shardings, loader = make_state(cfg)
    manager = build_checkpoint_manager(cfg, "unused")
    try:
        return load_at_start(cfg, manager, state, shardings, TrainContext(), loader)
    finally:
        manager.finalize()


def test_missing_load_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as err:
        _load(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)


def test_empty_load_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint") as err:
        _load(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_incomplete_checkpoint_named_directly(good, tmp_path):
    shutil.copytree(good / "4", tmp_path / "4")
    os.remove(tmp_path / "4" / MARKER)
    with pytest.raises(CheckpointError, match="incomplete") as err:
        _load(tmp_path / "4")
    assert str(tmp_path / "4") in str(err.value)


def test_checkpoint_of_another_model_names_the_parameter(good):
    with pytest.raises(CheckpointError) as err:
        _load(good / "4", content=("model",), hidden_size=64)
    text = str(err.value)
    assert "different model" in text and str(good / "4") in text
    assert "(128, 32)" in text and "(128, 64)" in text  # the embedding: both shapes
    assert "model.hidden_size: checkpoint 32, now 64" in text


def test_checkpoint_of_the_other_qk_lane_order_is_refused(good):
    """Same shapes, other RoPE lane order: loading would silently compute another model."""
    with pytest.raises(CheckpointError) as err:
        _load(good / "4", content=("model",), qk_interleaved=True)
    text = str(err.value)
    assert "trained with model.qk_interleaved=False" in text and "sets model.qk_interleaved=True" in text
    assert str(good / "4") in text


def test_checkpoint_with_other_layer_count(good):
    with pytest.raises(CheckpointError, match="layers_2.* not in the checkpoint"):
        _load(good / "4", content=("model",), num_layers=3)


def test_corrupt_checkpoint(good, tmp_path):
    shutil.copytree(good / "4", tmp_path / "4")
    data_dir = tmp_path / "4" / "model" / "d"
    for name in os.listdir(data_dir):
        with open(data_dir / name, "r+b") as f:
            f.truncate(10)
    with pytest.raises(CheckpointError, match="corrupt or unreadable") as err:
        _load(tmp_path / "4")
    assert str(tmp_path / "4") in str(err.value)


def test_dead_s3_endpoint_fails_fast_naming_it(monkeypatch, tmp_path):
    from ckpt_helpers import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    cfg = tiny_config(
        ckpt=dict(save_ckpt_folder="boto3:s3://bucket/run", async_upload_tmp_folder=str(tmp_path))
    )
    start = time.time()
    with pytest.raises(CheckpointError, match="Cannot reach the S3 endpoint") as err:
        build_checkpoint_manager(cfg, str(tmp_path))
    assert time.time() - start < 30
    assert endpoint in str(err.value) and "very-secret-value" not in str(err.value)


def test_unsupported_backend_and_empty_folder():
    with pytest.raises(CheckpointError, match="only the 'local:' and 'boto3:'"):
        parse_location("volc:vc://bucket/x")
    with pytest.raises(CheckpointError, match="empty"):
        parse_location("  ")


def test_internevo_bucket_with_ip_names_the_endpoint():
    loc = parse_location("boto3:s3://model_weights.10.1.2.3/llm/run1", env={})
    assert (loc.bucket, loc.prefix, loc.settings.endpoint) == (
        "model_weights",
        "llm/run1",
        "http://10.1.2.3:80",
    )
    assert "secret" not in repr(parse_location("s3://b/p", env={"AWS_SECRET_ACCESS_KEY": "secret"}))


ENOSPC_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {helpers!r})
    from ckpt_helpers import make_state, tiny_config
    from internevo_jax.checkpoint import CheckpointError, build_checkpoint_manager
    from internevo_jax.trainer.state import TrainContext
    folder = sys.argv[1]
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=folder, checkpoint_every=1))
    state, _, loader = make_state(cfg, perturb=0.1)
    manager = build_checkpoint_manager(cfg, folder)
    ctx = TrainContext()
    try:
        for step in (1, 2, 3):
            ctx.step = step
            manager.maybe_save(state, ctx, loader)
        manager.finalize()
    except CheckpointError as err:
        print("ERROR:", err)
        print("LATEST:", manager.latest().step if manager.latest() else None)
        sys.exit(3)
    print("NO ERROR")
""")


def test_disk_full_keeps_previous_checkpoint(tmp_path):
    if shutil.which("unshare") is None or sys.platform != "linux":
        pytest.skip("needs unshare to mount a small tmpfs")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    script = tmp_path / "fill.py"
    script.write_text(ENOSPC_SCRIPT.format(helpers=os.path.dirname(__file__)))
    disk = tmp_path / "disk"
    disk.mkdir()
    # ~1 MB per checkpoint of the tiny model: the first fits, the second does not.
    cmd = f"mount -t tmpfs -o size=1500k tmpfs {disk} && exec {sys.executable} {script} {disk}/ckpts"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out[-3000:]
    assert "The disk is full" in out and "ckpts/2" in out
    assert "LATEST: 1" in out
