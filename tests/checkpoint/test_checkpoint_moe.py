"""An MoE train state saved with expert parallelism 4 restores onto ep 2 and onto one device:
expert weights and their optimizer moments come back bit-identical in the new layout."""

from __future__ import annotations

import jax
import pytest
from ckpt_helpers import assert_trees_equal, host_tree, make_state, tiny_config

from internevo_jax.checkpoint import build_checkpoint_manager
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext

MOE = dict(num_experts=4, top_k=2, moe_type="Dropless", num_kv_attention_heads=2, qkv_bias=False)
EP4 = dict(zero1=dict(size=-1, fsdp=False), expert=dict(size=4))
EP2 = dict(zero1=dict(size=-1, fsdp=False), expert=dict(size=2))


def moe_config(parallel, **ckpt):
    return tiny_config(model_type="MIXTRALMOE", model=MOE, parallel=parallel, ckpt=ckpt)


@pytest.fixture(scope="module")
def saved_on_ep4(tmp_path_factory):
    assert len(jax.devices()) == 8, "tests/conftest.py sets 8 fake CPU devices"
    root = tmp_path_factory.mktemp("moe")
    cfg = moe_config(EP4, save_ckpt_folder=str(root / "ckpts"), checkpoint_every=1)
    state, shardings, loader = make_state(cfg, devices=jax.devices()[:8], perturb=0.1)
    w1 = state.params["layers_0"]["feed_forward"]["w1"]
    assert shardings.params["layers_0"]["feed_forward"]["w1"].spec[0] == "expert"
    # 4 expert shards, each also split along hidden over the rest of the ZeRO group (fsdp 2)
    assert len({str(s.index[0]) for s in w1.addressable_shards}) == 4
    assert len({str(s.index) for s in w1.addressable_shards}) == 8
    manager = build_checkpoint_manager(cfg, str(root))
    manager.maybe_save(state, TrainContext(step=2), loader)
    manager.finalize()
    return root / "ckpts", host_tree(state)


@pytest.mark.parametrize("parallel,ndev", [(EP2, 8), (dict(zero1=1), 1)], ids=["ep2", "1-device"])
def test_moe_checkpoint_restores_onto_another_expert_parallel_size(saved_on_ep4, parallel, ndev):
    folder, expected = saved_on_ep4
    cfg = moe_config(parallel, save_ckpt_folder=str(folder))
    state, shardings, loader = make_state(cfg, devices=jax.devices()[:ndev])
    manager = build_checkpoint_manager(cfg, str(folder.parent))
    ctx = TrainContext()
    restored = load_at_start(cfg, manager, state, shardings, ctx, loader)
    manager.finalize()
    assert ctx.step == 2
    for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
        assert leaf.sharding == sharding
    assert_trees_equal(restored.params, expected.params)
    assert_trees_equal(restored.opt_state, expected.opt_state)
