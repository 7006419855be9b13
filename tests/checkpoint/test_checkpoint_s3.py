"""S3 checkpoints against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import logging
import os

import boto3
import pytest
from ckpt_helpers import (
    S3_ENV,
    assert_trees_equal,
    free_port,
    host_tree,
    make_bucket,
    make_state,
    tiny_config,
)

from internevo_jax.checkpoint import MARKER, CheckpointError, build_checkpoint_manager
from internevo_jax.trainer.checkpointing import Checkpointing
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext


def _client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def _keys(endpoint, bucket, prefix):
    pages = _client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _cfg(folder, staging, **ckpt):
    return tiny_config(
        ckpt=dict(save_ckpt_folder=folder, async_upload=True, async_upload_tmp_folder=str(staging), **ckpt)
    )


def _save(cfg, run_dir, steps, state, loader):
    manager = build_checkpoint_manager(cfg, str(run_dir))
    ctx = TrainContext()
    try:
        for step in steps:
            ctx.step, ctx.num_consumed_tokens = step, 64 * step
            manager.maybe_save(state, ctx, loader)
    finally:
        manager.finalize()
    return manager


def _resume(cfg, run_dir):
    state, shardings, loader = make_state(cfg)
    manager = build_checkpoint_manager(cfg, str(run_dir))
    ctx = TrainContext()
    try:
        state = load_at_start(cfg, manager, state, shardings, ctx, loader)
    finally:
        manager.finalize()
    return host_tree(state), ctx


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    make_bucket(s3_endpoint, "ckpts")
    return "ckpts"


def test_save_list_and_auto_resume(s3_env, s3_endpoint, bucket, tmp_path, caplog):
    cfg = _cfg(f"boto3:s3://{bucket}/runs/a", tmp_path / "stage", checkpoint_every=4)
    state, _, loader = make_state(cfg, perturb=0.1)
    with caplog.at_level(logging.DEBUG, logger="internevo_jax"):
        manager = _save(cfg, tmp_path, range(1, 9), state, loader)
        restored, ctx = _resume(cfg, tmp_path)
    keys = _keys(s3_endpoint, bucket, "runs/a/")
    assert "runs/a/4/COMMITTED" in keys and "runs/a/8/COMMITTED" in keys
    assert any(k.startswith("runs/a/8/model/") for k in keys) and any(
        k.startswith("runs/a/8/optimizer/") for k in keys
    )
    assert [r.step for r in manager.scan().complete] == [4, 8]
    assert ctx.step == 8 and ctx.num_consumed_tokens == 512
    assert_trees_equal(restored, host_tree(state))
    # the staged copies are gone once uploaded, and the secret never reaches the log
    staged = tmp_path / "stage" / "internevo_jax" / bucket / "runs" / "a"
    assert not any(name.isdigit() for name in os.listdir(staged))
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in caplog.text
    assert s3_endpoint in caplog.text


def test_half_written_s3_checkpoint_is_ignored_then_replaced(s3_env, s3_endpoint, bucket, tmp_path, caplog):
    cfg = _cfg(f"boto3:s3://{bucket}/runs/b", tmp_path / "stage", checkpoint_every=4)
    state, _, loader = make_state(cfg, perturb=0.1)
    _save(cfg, tmp_path, range(1, 9), state, loader)
    client = _client(s3_endpoint)
    for key in _keys(s3_endpoint, bucket, "runs/b/8/"):  # an upload cut off before its marker
        if not key.endswith(MARKER) and "/model/" in key:
            client.copy_object(
                Bucket=bucket,
                Key=key.replace("runs/b/8/", "runs/b/12/"),
                CopySource={"Bucket": bucket, "Key": key},
            )
    with caplog.at_level(logging.WARNING, logger="internevo_jax"):
        restored, ctx = _resume(cfg, tmp_path)
    assert ctx.step == 8
    assert "half-written" in caplog.text and "runs/b/12" in caplog.text
    other, _, _ = make_state(cfg, perturb=0.2, seed=3)
    _save(cfg, tmp_path, [12], other, loader)
    restored, ctx = _resume(cfg, tmp_path)
    assert ctx.step == 12
    assert_trees_equal(restored, host_tree(other))
    # the copied data files (named by content hash) were deleted before the new upload
    copied = {k.replace("runs/b/8/", "runs/b/12/") for k in _keys(s3_endpoint, bucket, "runs/b/8/model/")}
    assert not {k for k in copied if "/d/" in k} & set(_keys(s3_endpoint, bucket, "runs/b/12/"))


def test_staged_copies_of_a_killed_run_are_removed_at_the_next_start(
    s3_env, s3_endpoint, bucket, tmp_path, monkeypatch, caplog
):
    from internevo_jax.checkpoint.manager import CheckpointManager

    cfg = _cfg(f"boto3:s3://{bucket}/runs/k", tmp_path / "stage", checkpoint_every=4)
    state, _, loader = make_state(cfg, perturb=0.1)
    staged = tmp_path / "stage" / "internevo_jax" / bucket / "runs" / "k"
    flags = staged.parent / "k.uploads"
    # a run killed after "checkpoint of step 4 complete" and before it deleted the staged copy
    with monkeypatch.context() as patch:
        patch.setattr(CheckpointManager, "_delete_staged", lambda self, mngr, slot, step: None)
        _save(cfg, tmp_path, range(1, 5), state, loader)
    assert (staged / "4" / "model").is_dir() and sorted(os.listdir(flags))
    (staged / "8.orbax-checkpoint-tmp-1").mkdir()  # and a save it had begun to write
    with caplog.at_level(logging.WARNING, logger="internevo_jax"):
        restored, ctx = _resume(cfg, tmp_path)
        manager = build_checkpoint_manager(cfg, str(tmp_path))
        manager.finalize()
    assert f"removed what an earlier run left in the staging folder {staged}: 4, 8.orbax" in caplog.text
    assert os.listdir(staged) == [] and not flags.exists()
    assert ctx.step == 4 and "runs/k/4/COMMITTED" in _keys(s3_endpoint, bucket, "runs/k/")
    assert_trees_equal(restored, host_tree(state))
    # the next save of the same step goes through as usual
    _save(cfg, tmp_path, [8], state, loader)
    assert "runs/k/8/COMMITTED" in _keys(s3_endpoint, bucket, "runs/k/")
    assert os.listdir(staged) == []


def test_snapshots_and_keep_last_n_on_s3(s3_env, s3_endpoint, bucket, tmp_path):
    cfg = _cfg(
        f"boto3:s3://{bucket}/runs/c",
        tmp_path / "stage",
        checkpoint_every=4,
        oss_snapshot_freq=3,
        keep_last_n=1,
    )
    state, _, loader = make_state(cfg, perturb=0.1)
    manager = _save(cfg, tmp_path, range(1, 11), state, loader)
    found = manager.scan()
    assert [(r.step, r.slot) for r in found.complete] == [(6, "snapshot/1"), (8, ""), (9, "snapshot/0")]
    assert not _keys(s3_endpoint, bucket, "runs/c/4/")
    _, ctx = _resume(cfg, tmp_path)
    assert ctx.step == 9


def test_load_model_only_from_an_s3_checkpoint_path(s3_env, bucket, tmp_path):
    cfg = _cfg(f"boto3:s3://{bucket}/runs/d", tmp_path / "stage", checkpoint_every=4)
    state, _, loader = make_state(cfg, perturb=0.1)
    _save(cfg, tmp_path, range(1, 5), state, loader)
    load = tiny_config(
        ckpt=dict(
            enable_save_ckpt=False,
            auto_resume=False,
            async_upload_tmp_folder=str(tmp_path / "stage2"),
            load_ckpt_info=dict(path=f"boto3:s3://{bucket}/runs/d/4", content=("model",)),
        )
    )
    restored, ctx = _resume(load, tmp_path)
    assert ctx.step == 0
    assert_trees_equal(restored.params, host_tree(state.params))


def test_missing_bucket_is_named(s3_env, tmp_path):
    cfg = _cfg("boto3:s3://no-such-bucket/x", tmp_path / "stage")
    with pytest.raises(CheckpointError, match="bucket 'no-such-bucket' does not exist"):
        build_checkpoint_manager(cfg, str(tmp_path))


def test_endpoint_down_at_save_time_training_goes_on(monkeypatch, tmp_path, caplog):
    """A real moto server stopped during the run: bounded retries, a loud report, no marker, and the
    next scheduled save (server back on the same port) succeeds."""
    from moto.server import ThreadedMotoServer

    from internevo_jax.checkpoint import deadlines

    monkeypatch.setattr(deadlines, "RETRY_BACKOFF_S", 0.05)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    make_bucket(endpoint, "outage")
    cfg = _cfg("boto3:s3://outage/run", tmp_path / "stage", checkpoint_every=2)
    state, _, loader = make_state(cfg, perturb=0.1)
    checkpointing = Checkpointing(cfg, str(tmp_path), install_signal_handlers=False)
    manager = checkpointing.manager
    ctx = TrainContext()
    try:
        with caplog.at_level(logging.INFO, logger="internevo_jax"):
            for step in range(1, 7):
                if step == 4:
                    manager.wait()
                    server.stop()  # the endpoint goes down before the save of step 4
                if step == 5:
                    manager.wait()  # the failed save is reported, not raised: training goes on
                    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
                    server.start()
                ctx.step = step
                assert checkpointing.after_step(state, ctx, loader) is False
            checkpointing.close()
        keys = _keys(endpoint, "outage", "run/")
        assert "run/2/COMMITTED" in keys and "run/6/COMMITTED" in keys
        assert "run/4/COMMITTED" not in keys
        failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("attempt 1 of 3" in r.getMessage() and endpoint in r.getMessage() for r in failures)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("step 4 was NOT saved" in m and endpoint in m for m in errors), errors
        assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in caplog.text
        assert [r.step for r in manager.scan().complete] == [2, 6]
        _, resumed = _resume(cfg, tmp_path)
        assert resumed.step == 6
    finally:
        server.stop()
