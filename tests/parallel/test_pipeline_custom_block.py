"""A model type with its own block trains the same pipelined: pipeline 2 x data 4 on 8 fake CPU
devices gives the one-device losses and parameters, and the block's own weights train too."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import pytest
from parallel_helpers import fixed_batches, run_steps, tiny_config

from internevo_jax.model import MODEL_REGISTRY, Attention, CausalLM, ModelArgs, register_model
from internevo_jax.model.layers import FeedForward, make_norm

MODEL_TYPE = "SANDWICH_TEST"


class SandwichBlock(nn.Module):
    """Pre-norm block with an extra norm on the attention output (a "sandwich" norm)."""

    args: ModelArgs
    scan_mode: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids, layer_idx: Any):
        a = self.args
        attended = Attention(a, name="attention")(
            make_norm(a, "attention_norm")(x), positions, segment_ids, layer_idx
        )
        h = x + make_norm(a, "attention_out_norm")(attended)
        out = h + FeedForward(a, name="feed_forward")(make_norm(a, "ffn_norm")(h), layer_idx)
        return (out, None) if self.scan_mode else out


class SandwichLM(CausalLM):
    block_cls = SandwichBlock

    @classmethod
    def from_config(cls, cfg: Any) -> SandwichLM:
        return cls(ModelArgs.from_config(cfg))


@pytest.fixture
def sandwich_type():
    saved = dict(MODEL_REGISTRY)
    register_model(MODEL_TYPE, SandwichLM)
    yield MODEL_TYPE
    MODEL_REGISTRY.clear()
    MODEL_REGISTRY.update(saved)


def test_pipeline_runs_the_model_types_block(sandwich_type):
    batches = fixed_batches(n_steps=2)

    def config(parallel):
        cfg = tiny_config(parallel, num_layers=4, scan_layers=True)
        return dataclasses.replace(cfg, model_type=sandwich_type)

    ref = run_steps(config(dict(zero1=1)), jax.devices()[:1], batches)
    run = run_steps(config(dict(zero1=1, pipeline=2)), jax.devices(), batches)
    assert dict(run.mesh.shape) == {"pipeline": 2, "data": 4, "expert": 1, "fsdp": 1, "tensor": 1}

    np.testing.assert_allclose(run.losses, ref.losses, rtol=1e-5)
    got, want = jax.device_get(run.state.params), jax.device_get(ref.state.params)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-6, err_msg=jax.tree_util.keystr(path))
    # The extra norm exists only in this block: it moved off its init (ones), so its gradient
    # came through the pipeline stages.
    extra = got["layers"]["attention_out_norm"]["scale"]
    assert extra.shape == (4, 32)
    assert np.abs(extra - 1.0).max() > 1e-4
