"""Save on 8 devices (dp8, fully sharded), restore on 1 device and on another mesh: same numbers."""

from __future__ import annotations

import jax
import pytest
from ckpt_helpers import assert_trees_equal, host_tree, make_state, tiny_config

from internevo_jax.checkpoint import build_checkpoint_manager
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext

DP8 = dict(zero1=dict(size=8, fsdp=True), tensor=dict(size=1, mode="mtp"))  # every array split 8 ways
TP2_FSDP2 = dict(zero1=dict(size=2, fsdp=True), tensor=dict(size=2, mode="mtp"))  # data 2 x fsdp 2 x tensor 2
TP2_DP4 = dict(
    zero1=-1, tensor=dict(size=2, mode="mtp")
)  # tensor 2 x data 4, optimizer state split over data
REPLICATED = dict(zero1=dict(size=1, fsdp=False), tensor=dict(size=1, mode="mtp"))


@pytest.fixture(scope="module")
def saved_on_8(tmp_path_factory):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    root = tmp_path_factory.mktemp("reshard")
    cfg = tiny_config(parallel=DP8, ckpt=dict(save_ckpt_folder=str(root / "ckpts"), checkpoint_every=1))
    state, _, loader = make_state(cfg, devices=jax.devices()[:8], perturb=0.1)
    moment = state.opt_state[1].inner_state[0].mu["layers_0"]["feed_forward"]["w1"]["kernel"]
    assert len({str(s.index) for s in moment.addressable_shards}) == 8  # really saved from 8 distinct shards
    manager = build_checkpoint_manager(cfg, str(root))
    manager.maybe_save(state, TrainContext(step=3), loader)
    manager.finalize()
    return root / "ckpts", host_tree(state)


@pytest.mark.parametrize(
    "parallel,ndev",
    [(REPLICATED, 1), (TP2_FSDP2, 8), (TP2_DP4, 8)],
    ids=["1-device", "dp2-fsdp2-tp2", "tp2-dp4"],
)
def test_restore_reshards_onto_another_mesh(saved_on_8, parallel, ndev):
    folder, expected = saved_on_8
    cfg = tiny_config(parallel=parallel, ckpt=dict(save_ckpt_folder=str(folder)))
    state, shardings, loader = make_state(cfg, devices=jax.devices()[:ndev])
    manager = build_checkpoint_manager(cfg, str(folder.parent))
    if parallel is TP2_DP4:  # really a tensor-parallel mesh: some weight is split over 2 tensor shards
        assert any("tensor" in str(getattr(s, "spec", "")) for s in jax.tree.leaves(shardings.params)), (
            "expected tensor-parallel shardings"
        )
    ctx = TrainContext()
    restored = load_at_start(cfg, manager, state, shardings, ctx, loader)
    manager.finalize()
    assert ctx.step == 3
    for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
        assert leaf.sharding == sharding
    assert_trees_equal(restored.params, expected.params)
    assert_trees_equal(restored.opt_state, expected.opt_state)
    assert_trees_equal(restored.loss_scale, expected.loss_scale)
