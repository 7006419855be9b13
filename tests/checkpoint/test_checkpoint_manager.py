"""Saving and resuming in-process on a local folder: contents, snapshots, pruning, leftovers."""

from __future__ import annotations

import logging
import os
import shutil

import jax
import numpy as np
import pytest
from ckpt_helpers import assert_trees_equal, host_tree, make_state, tiny_config

from internevo_jax.checkpoint import MARKER, build_checkpoint_manager
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext


def _save_steps(cfg, run_dir, steps, state, loader):
    manager = build_checkpoint_manager(cfg, str(run_dir))
    ctx = TrainContext()
    try:
        for step in steps:
            ctx.step, ctx.num_consumed_tokens, ctx.inf_nan_skip_batches = step, 64 * step, step % 3
            manager.maybe_save(state, ctx, loader)
    finally:
        manager.finalize()
    return manager


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder with complete checkpoints at steps 4 and 8 of a perturbed (non-initial) state."""
    root = tmp_path_factory.mktemp("saved")
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=f"local:{root}/ckpts", checkpoint_every=4))
    state, _, loader = make_state(cfg, perturb=0.1)
    _save_steps(cfg, root, range(1, 9), state, loader)
    return cfg, root, host_tree(state)


def _resume(cfg, run_dir, **ckpt):
    cfg = tiny_config(ckpt={**ckpt})
    state, shardings, loader = make_state(cfg)
    fresh = host_tree(state)
    manager = build_checkpoint_manager(cfg, str(run_dir))
    ctx = TrainContext()
    try:
        state = load_at_start(cfg, manager, state, shardings, ctx, loader)
    finally:
        manager.finalize()
    return host_tree(state), fresh, ctx, loader


def test_auto_resume_restores_everything_from_newest(saved):
    cfg, root, expected = saved
    state, _, ctx, loader = _resume(cfg, root, save_ckpt_folder=f"local:{root}/ckpts", auto_resume=True)
    assert_trees_equal(state, expected)
    assert (ctx.step, ctx.num_consumed_tokens, ctx.inf_nan_skip_batches) == (8, 512, 2)
    assert loader.position == 8
    assert sorted(os.listdir(root / "ckpts")) == ["4", "8"]
    assert os.path.exists(root / "ckpts" / "8" / MARKER)


def test_model_only_keeps_fresh_optimizer_and_counters(saved):
    cfg, root, expected = saved
    state, fresh, ctx, loader = _resume(
        cfg,
        root,
        enable_save_ckpt=False,
        auto_resume=False,
        load_ckpt_info=dict(path=f"local:{root}/ckpts/4", content=("model",)),
    )
    assert_trees_equal(state.params, expected.params)
    assert_trees_equal(state.opt_state, fresh.opt_state)
    assert (ctx.step, loader.position) == (0, 0)  # fine-tuning starts at step 0, as in InternEvo


def test_optimizer_without_scheduler_restarts_the_schedules(saved):
    cfg, root, expected = saved
    state, fresh, ctx, _ = _resume(
        cfg,
        root,
        enable_save_ckpt=False,
        auto_resume=False,
        load_ckpt_info=dict(path=f"local:{root}/ckpts", content=("model", "optimizer")),
    )
    inner_saved, inner_now = expected.opt_state[1].inner_state, state.opt_state[1].inner_state
    assert_trees_equal(inner_now, inner_saved)  # Adam moments and step come back
    assert_trees_equal(state.loss_scale, expected.loss_scale)
    assert int(state.opt_state[1].count) == int(fresh.opt_state[1].count) == 0
    assert ctx.step == 8  # counters come back whenever more than the model is loaded


def test_scheduler_only_takes_the_schedule_counters(saved):
    cfg, root, expected = saved
    state, fresh, _, _ = _resume(
        cfg,
        root,
        enable_save_ckpt=False,
        auto_resume=False,
        load_ckpt_info=dict(path=f"local:{root}/ckpts", content=("scheduler",)),
    )
    assert int(state.opt_state[1].count) == int(expected.opt_state[1].count) != 0
    assert_trees_equal(state.opt_state[1].inner_state, fresh.opt_state[1].inner_state)
    assert_trees_equal(state.params, fresh.params)


def test_auto_resume_ignores_load_ckpt_info_as_internevo_does(saved, tmp_path, caplog):
    cfg, root, expected = saved
    info = dict(path=str(root / "ckpts"), content=("all",))
    with caplog.at_level(logging.INFO, logger="internevo_jax"):
        state, fresh, ctx, _ = _resume(
            cfg, tmp_path, save_ckpt_folder=f"local:{tmp_path}/empty", auto_resume=True, load_ckpt_info=info
        )
    assert_trees_equal(state, fresh)
    assert ctx.step == 0
    assert "load_ckpt_info" in caplog.text and "auto_resume=False" in caplog.text
    state, _, ctx, _ = _resume(
        cfg, tmp_path, save_ckpt_folder=f"local:{tmp_path}/empty", auto_resume=False, load_ckpt_info=info
    )
    assert_trees_equal(state, expected)
    assert ctx.step == 8


def test_half_written_checkpoints_are_ignored_and_reported(saved, tmp_path, caplog):
    cfg, root, expected = saved
    folder = tmp_path / "ckpts"
    shutil.copytree(root / "ckpts", folder)
    shutil.copytree(folder / "8", folder / "12")  # a save killed before its marker
    os.remove(folder / "12" / MARKER)
    shutil.copytree(folder / "8", folder / "16.orbax-checkpoint-tmp-123")  # killed inside orbax
    os.remove(folder / "16.orbax-checkpoint-tmp-123" / MARKER)
    with caplog.at_level(logging.WARNING, logger="internevo_jax"):
        state, _, ctx, _ = _resume(cfg, tmp_path, save_ckpt_folder=f"local:{folder}", auto_resume=True)
    assert ctx.step == 8
    assert_trees_equal(state, expected)
    text = caplog.text
    assert "half-written" in text and str(folder / "12") in text and "16.orbax-checkpoint-tmp-123" in text


def test_new_save_replaces_a_half_written_one_at_the_same_step(saved, tmp_path):
    cfg, root, _ = saved
    folder = tmp_path / "ckpts"
    shutil.copytree(root / "ckpts" / "8", folder / "4")
    os.remove(folder / "4" / MARKER)
    cfg2 = tiny_config(ckpt=dict(save_ckpt_folder=f"local:{folder}", checkpoint_every=4))
    state, _, loader = make_state(cfg2, perturb=0.3, seed=5)
    _save_steps(cfg2, tmp_path, [4], state, loader)
    restored, _, ctx, _ = _resume(cfg2, tmp_path, save_ckpt_folder=f"local:{folder}", auto_resume=True)
    assert ctx.step == 4
    assert_trees_equal(restored, host_tree(state))


def test_snapshots_alternate_slots_and_keep_last_n_prunes(tmp_path):
    folder = tmp_path / "ckpts"
    cfg = tiny_config(
        ckpt=dict(save_ckpt_folder=str(folder), checkpoint_every=4, oss_snapshot_freq=3, keep_last_n=2)
    )
    state, _, loader = make_state(cfg, perturb=0.1)
    manager = _save_steps(cfg, tmp_path, range(1, 17), state, loader)
    found = manager.scan()
    regular = [r.step for r in found.complete if not r.slot]
    snaps = {r.slot: r.step for r in found.complete if r.slot}
    assert regular == [12, 16]  # 4 and 8 pruned; 12 = 3*4 is a regular save, not a snapshot
    # snapshots at 3, 6, 9, 15 alternate 0, 1, 0, 1 (12 was a regular save); each slot keeps its newest
    assert snaps == {"snapshot/0": 9, "snapshot/1": 15}
    assert found.incomplete == []
    assert sorted(os.listdir(folder / "snapshot" / "0")) == ["9"]


def test_newest_snapshot_wins_when_newer_than_regular(tmp_path):
    folder = tmp_path / "ckpts"
    cfg = tiny_config(ckpt=dict(save_ckpt_folder=str(folder), checkpoint_every=10, oss_snapshot_freq=3))
    state, _, loader = make_state(cfg, perturb=0.1)
    _save_steps(cfg, tmp_path, range(1, 8), state, loader)
    _, _, ctx, _ = _resume(cfg, tmp_path, save_ckpt_folder=str(folder), auto_resume=True)
    assert ctx.step == 6


def test_restored_arrays_use_the_target_shardings(saved):
    cfg, root, _ = saved
    cfg2 = tiny_config(ckpt=dict(save_ckpt_folder=f"local:{root}/ckpts"))
    state, shardings, loader = make_state(cfg2)
    manager = build_checkpoint_manager(cfg2, str(root))
    restored = load_at_start(cfg2, manager, state, shardings, TrainContext(), loader)
    manager.finalize()
    for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
        assert leaf.sharding == sharding
    assert np.isfinite(np.asarray(jax.tree.leaves(restored.params)[0])).all()


def test_hf_ckpt_type_goes_through_the_converter(tmp_path):
    from internevo_jax.hf import export_hf

    cfg = tiny_config()
    state, _, _ = make_state(cfg, perturb=0.1)
    export_hf(host_tree(state.params), cfg, str(tmp_path / "hf"), dtype="fp32")
    restored, fresh, ctx, _ = _resume(
        cfg,
        tmp_path,
        enable_save_ckpt=False,
        auto_resume=False,
        load_ckpt_info=dict(path=f"local:{tmp_path}/hf", content=("model",), ckpt_type="hf"),
    )
    assert_trees_equal(restored.params, host_tree(state.params))
    assert_trees_equal(restored.opt_state, fresh.opt_state)
    assert ctx.step == 0


def test_snapshot_ckpt_folder_moves_the_slots(tmp_path):
    cfg = tiny_config(
        ckpt=dict(
            save_ckpt_folder=str(tmp_path / "ckpts"),
            checkpoint_every=10,
            oss_snapshot_freq=2,
            snapshot_ckpt_folder=f"local:{tmp_path}/snaps",
        )
    )
    state, _, loader = make_state(cfg, perturb=0.1)
    _save_steps(cfg, tmp_path, range(1, 6), state, loader)
    assert sorted(os.listdir(tmp_path / "snaps")) == ["0", "1"]
    assert os.path.exists(tmp_path / "snaps" / "1" / "4" / MARKER)
    _, _, ctx, _ = _resume(
        cfg,
        tmp_path,
        save_ckpt_folder=str(tmp_path / "ckpts"),
        snapshot_ckpt_folder=str(tmp_path / "snaps"),
        auto_resume=True,
    )
    assert ctx.step == 4
