"""QWEN2 (q/k/v biases without an o bias) and GEMMA (head_dim apart from hidden / heads, (1 + w)
norms, GeGLU, tied head, scaled embedding) train on tp2 x fsdp4 and fsdp8 like on one device."""

from __future__ import annotations

import dataclasses

import jax
import pytest
from jax.sharding import PartitionSpec as P
from parallel_helpers import assert_same_training, fixed_batches, run_steps, spec, tiny_config

FAMILIES = {
    "QWEN2": dict(num_kv_attention_heads=2),
    "GEMMA": dict(head_dim=16, use_swiglu=False, add_unit_offset=True, no_bias=True),
}
LAYOUTS = {
    "tp2": dict(zero1=-1, tensor=dict(size=2, mode="mtp")),
    "fsdp": dict(zero1=dict(size=-1, fsdp=True)),
}


def family_config(model_type: str, parallel: dict | None = None):
    return dataclasses.replace(tiny_config(parallel, **FAMILIES[model_type]), model_type=model_type)


@pytest.fixture(scope="module")
def batches():
    return fixed_batches()


@pytest.fixture(scope="module")
def single(batches):
    return {name: run_steps(family_config(name), jax.devices()[:1], batches) for name in FAMILIES}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_trains_like_one_device(single, batches, model_type, layout):
    run = run_steps(family_config(model_type, LAYOUTS[layout]), jax.devices(), batches)
    # The extra sums of a tied head (embedding and head gradients added) move the near-zero Adam
    # updates a little more than in InternLM's layouts; a wrong gradient moves a weight by ~lr (1e-3).
    assert_same_training(run, single[model_type], atol=2e-5)
    params = run.shardings.params
    if model_type == "GEMMA":
        assert "head" not in params  # tied: the embedding table is the head
    if layout == "tp2":
        wq = ("layers_0", "attention", "wq")
        assert spec(params, *wq, "kernel") == P("fsdp", "tensor")
        if model_type == "QWEN2":
            assert spec(params, *wq, "bias") == P("tensor")
            assert "bias" not in params["layers_0"]["attention"]["wo"]
