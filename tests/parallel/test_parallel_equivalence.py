"""Every parallel layout trains like one device: 3 fp32 steps of a tiny InternLM on 8 fake CPU
devices give the single-device losses and parameters, with the shardings each layout claims."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import PartitionSpec as P
from parallel_helpers import assert_same_training, fixed_batches, run_steps, spec, tiny_config

from internevo_jax.parallel.zero import compute_shardings

PIPELINE_MODEL = dict(num_layers=4, scan_layers=True)


@pytest.fixture(scope="module")
def batches():
    return fixed_batches()


@pytest.fixture(scope="module")
def reference(batches):
    """One device, unrolled layers and stacked layers (the pipeline's parameter tree)."""
    return {
        "unrolled": run_steps(tiny_config(), jax.devices()[:1], batches),
        "stacked": run_steps(tiny_config(**PIPELINE_MODEL), jax.devices()[:1], batches),
    }


def adam_moments(run):
    """The first-moment pytree of the AdamW state (whatever chain wraps it)."""
    for node in jax.tree.leaves(run.shardings.opt_state, is_leaf=lambda x: hasattr(x, "mu")):
        if hasattr(node, "mu"):
            return node.mu
    raise AssertionError("no Adam moments in the optimizer state")


def adam_moments_values(run):
    """The first-moment arrays of the trained state."""
    for node in jax.tree.leaves(run.state.opt_state, is_leaf=lambda x: hasattr(x, "mu")):
        if hasattr(node, "mu"):
            return node.mu
    raise AssertionError("no Adam moments in the optimizer state")


def collectives(hlo: str, kind: str) -> int:
    return hlo.count(f" {kind}(") + hlo.count(f" {kind}-start(")


WQ = ("layers_0", "attention", "wq", "kernel")
WO = ("layers_0", "attention", "wo", "kernel")
W2 = ("layers_0", "feed_forward", "w2", "kernel")


def test_zero1_whole_dp_group(reference, batches):
    """zero1=-1 on 8 devices: master weights and Adam moments split 8 ways, compute copy whole."""
    run = run_steps(tiny_config(dict(zero1=-1)), jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 1, "data": 1, "expert": 1, "fsdp": 8, "tensor": 1}
    assert_same_training(run, reference["unrolled"])
    assert spec(run.shardings.params, *WQ) == P("fsdp")
    assert spec(adam_moments(run), *WQ) == P("fsdp")
    assert spec(adam_moments(run), "embedding", "embedding") == P(None, "fsdp")
    compute = compute_shardings(run.shardings.params, run.rules)
    assert all(spec(s) == P() for s in jax.tree.leaves(compute))
    assert collectives(run.hlo, "all-gather") > 0  # the compute copy is gathered in the step
    # ZeRO-1 memory: a device holds 1/8 of every split moment; only the tiny norm scales stay whole
    leaves = jax.tree.leaves(adam_moments_values(run))
    is_split = ["fsdp" in jax.tree.leaves(tuple(x.sharding.spec)) for x in leaves]
    on_device_0 = sum(x.addressable_shards[0].data.nbytes for x in leaves)
    assert on_device_0 == sum(x.nbytes // 8 if split else x.nbytes for x, split in zip(leaves, is_split))
    split_bytes = sum(x.nbytes for x, split in zip(leaves, is_split) if split)
    assert split_bytes > 0.95 * sum(x.nbytes for x in leaves)


@pytest.mark.slow
def test_zero1_group_of_four(reference, batches):
    run = run_steps(tiny_config(dict(zero1=4)), jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 1, "data": 2, "expert": 1, "fsdp": 4, "tensor": 1}
    assert_same_training(run, reference["unrolled"])
    assert spec(adam_moments(run), *W2) == P(None, "fsdp")


@pytest.mark.slow
def test_plain_data_parallel(reference, batches):
    run = run_steps(tiny_config(dict(zero1=1)), jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 1, "data": 8, "expert": 1, "fsdp": 1, "tensor": 1}
    assert_same_training(run, reference["unrolled"])


def test_fsdp(reference, batches):
    """zero1.fsdp=True: the compute copy stays sharded as well."""
    run = run_steps(tiny_config(dict(zero1=dict(size=-1, fsdp=True))), jax.devices(), batches)
    assert_same_training(run, reference["unrolled"])
    compute = compute_shardings(run.shardings.params, run.rules)
    assert spec(compute, *WQ) == P("fsdp")
    assert spec(compute, "head", "kernel") == P("fsdp")


def test_tensor_parallel_mtp(reference, batches):
    """tp2 x dp4: Megatron column (wq, w1, head) and row (wo, w2) splits over "tensor"."""
    run = run_steps(tiny_config(dict(zero1=-1, tensor=dict(size=2, mode="mtp"))), jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 1, "data": 1, "expert": 1, "fsdp": 4, "tensor": 2}
    assert_same_training(run, reference["unrolled"])
    params = run.shardings.params
    assert spec(params, *WQ) == P("fsdp", "tensor")
    assert spec(params, *WO) == P("tensor", "fsdp")
    assert spec(params, "layers_0", "feed_forward", "w1", "kernel") == P("fsdp", "tensor")
    assert spec(params, *W2) == P("tensor", "fsdp")
    assert spec(params, "head", "kernel") == P("fsdp", "tensor")
    assert spec(params, "embedding", "embedding") == P("tensor", "fsdp")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["msp", "fsp"])
def test_tensor_and_sequence_parallel(reference, batches, mode):
    run = run_steps(tiny_config(dict(zero1=-1, tensor=dict(size=2, mode=mode))), jax.devices(), batches)
    assert_same_training(run, reference["unrolled"])
    assert spec(run.shardings.params, *WQ) == P("fsdp", "tensor")
    assert dict(run.rules)["activation_length"] == "tensor"


def test_intern_sequence_parallel_isp(reference, batches):
    """isp: weights whole over "tensor", sequence split; attention switches to heads (all-to-all)."""
    cfg = tiny_config(dict(zero1=-1, tensor=dict(size=2, mode="isp"), weight=dict(size=2)))
    run = run_steps(cfg, jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 1, "data": 2, "expert": 1, "fsdp": 2, "tensor": 2}
    assert_same_training(run, reference["unrolled"])
    assert spec(run.shardings.params, *WQ) == P("fsdp")
    assert collectives(run.hlo, "all-to-all") > 0


def test_pipeline_two_stages(reference, batches):
    """pipeline 2 x data 4: each stage holds half of the stacked layers."""
    cfg = tiny_config(dict(zero1=1, pipeline=2), **PIPELINE_MODEL)
    run = run_steps(cfg, jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 2, "data": 4, "expert": 1, "fsdp": 1, "tensor": 1}
    assert_same_training(run, reference["stacked"])
    assert spec(run.shardings.params, "layers", "attention", "wq", "kernel")[0] == "pipeline"
    assert spec(run.shardings.params, "head", "kernel") == P()  # outside the stages: replicated
    assert collectives(run.hlo, "collective-permute") > 0


@pytest.mark.slow
def test_interleaved_pipeline_with_tensor_parallel(reference, batches):
    """pipeline 2 x 2 chunks (circular) x tensor 2 x zero1 over the remaining 2."""
    cfg = tiny_config(dict(zero1=-1, pipeline=2, tensor=2), num_chunks=2, **PIPELINE_MODEL)
    run = run_steps(cfg, jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 2, "data": 1, "expert": 1, "fsdp": 2, "tensor": 2}
    assert run.rules.pipeline_chunks == 2
    assert_same_training(run, reference["stacked"])


@pytest.mark.slow
def test_pipeline_with_tensor_and_data_parallel(reference, batches):
    """tp2 x pp2 x dp2 with one chunk per stage."""
    cfg = tiny_config(dict(zero1=1, pipeline=2, tensor=2), **PIPELINE_MODEL)
    run = run_steps(cfg, jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 2, "data": 2, "expert": 1, "fsdp": 1, "tensor": 2}
    assert_same_training(run, reference["stacked"])
    assert spec(run.shardings.params, "layers", "attention", "wq", "kernel") == P("pipeline", None, "tensor")
