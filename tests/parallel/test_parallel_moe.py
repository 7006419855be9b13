"""Mixture of experts on 8 CPU devices: expert parallelism (ep 2, ep 4, ep 2 x tp 2, no_tp) trains
like one device, tokens travel by all-to-all, and expert weights are split over "expert"."""

from __future__ import annotations

import dataclasses

import jax
import pytest
from parallel_helpers import assert_same_training, fixed_batches, run_steps, spec, tiny_config

from internevo_jax.config import ConfigError, parallel_sizes

ROUTINGS = {
    # 16 tokens per row, capacity ceil(16 / 4 * 0.75 * 2) = 6: some choices are dropped
    "GShard": dict(moe_type="GShard", moe_layer_kwargs=dict(capacity_factor=0.75, min_capacity=2)),
    "Dropless": dict(moe_type="Dropless"),
}
LAYOUTS = {
    "ep2": dict(zero1=-1, expert=dict(size=2)),
    "ep4": dict(zero1=-1, expert=dict(size=4)),
    "ep2-tp2": dict(zero1=-1, tensor=dict(size=2, mode="mtp"), expert=dict(size=2)),
    "ep2-tp2-no_tp": dict(zero1=-1, tensor=dict(size=2, mode="mtp"), expert=dict(size=2, no_tp=True)),
}


def moe_config(routing: str, parallel: dict | None = None, **model):
    cfg = tiny_config(
        parallel,
        num_kv_attention_heads=2,
        num_experts=4,
        top_k=2,
        qkv_bias=False,
        **ROUTINGS[routing],
        **model,
    )
    return dataclasses.replace(cfg, model_type="MIXTRALMOE")


@pytest.fixture(scope="module")
def batches():
    return fixed_batches()


@pytest.fixture(scope="module")
def single(batches):
    return {name: run_steps(moe_config(name), jax.devices()[:1], batches) for name in ROUTINGS}


# Every layout once; GShard (whose capacities are per row) on all the expert-parallel sizes.
CASES = [
    ("GShard", "ep2"),
    ("GShard", "ep4"),
    ("GShard", "ep2-tp2"),
    ("Dropless", "ep4"),
    ("Dropless", "ep2-tp2-no_tp"),
]


@pytest.mark.parametrize("routing,layout", CASES)
def test_expert_parallel_trains_like_one_device(single, batches, routing, layout):
    cfg = moe_config(routing, LAYOUTS[layout])
    run = run_steps(cfg, jax.devices(), batches)
    assert_same_training(run, single[routing], atol=2e-5)
    ep = run.mesh.shape["expert"]
    assert ep == parallel_sizes(cfg, 8).expert == LAYOUTS[layout]["expert"]["size"]
    w1 = spec(run.shardings.params, "layers_0", "feed_forward", "w1")
    if ep > 1:
        assert "all-to-all" in run.hlo  # tokens travel to their experts' devices and back
        assert w1[0] == "expert"
    tp = run.mesh.shape["tensor"]
    if tp > 1:
        no_tp = LAYOUTS[layout]["expert"].get("no_tp", False)
        assert (w1[2] if len(w1) > 2 else None) == (None if no_tp else "tensor")


def test_scanned_rematerialised_moe_layers(batches):
    """The routing statistics (and so the auxiliary loss) come out of nn.scan and nn.remat too:
    ep 2 trains like one device, with the stacked expert weights split over "expert"."""
    scanned = dict(scan_layers=True, checkpoint=True)
    ref = run_steps(moe_config("Dropless", **scanned), jax.devices()[:1], batches)
    run = run_steps(moe_config("Dropless", LAYOUTS["ep2"], **scanned), jax.devices(), batches)
    assert_same_training(run, ref, atol=2e-5)
    assert tuple(spec(run.shardings.params, "layers", "feed_forward", "w1"))[:2] == (None, "expert")


@pytest.mark.parametrize(
    "parallel,message",
    [
        (dict(zero1=-1, expert=dict(size=3)), "expert-parallel size of 3, which must divide"),
        (dict(zero1=-1, pipeline=dict(size=2)), "pipeline parallelism of mixture-of-experts"),
    ],
)
def test_impossible_expert_layouts_are_refused(parallel, message):
    with pytest.raises(ConfigError, match=message):
        parallel_sizes(moe_config("Dropless", parallel), 8)


def test_expert_size_minus_one_is_dp_capped_by_experts():
    assert parallel_sizes(moe_config("GShard", dict(zero1=-1, expert=dict(size=-1))), 8).expert == 4
    assert parallel_sizes(moe_config("GShard", dict(zero1=-1, expert=dict(size=-1))), 2).expert == 2
