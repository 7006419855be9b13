"""The pieces a pipeline runs (embed, stage, logits, chunk) are the model's own forward."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import make_cfg, packed_batch

from internevo_jax.model import DecoderBlock, InternLM, ModelArgs, build_model
from internevo_jax.model.layers import make_norm


@pytest.mark.parametrize("scan", [False, True])
def test_call_is_embed_stage_logits(scan):
    model = build_model(make_cfg(scan_layers=scan, num_layers=4, embed_grad_scale=0.5))
    ids, positions, segments = packed_batch(np.random.default_rng(0))
    variables = model.init(jax.random.key(0), ids, positions, segments)
    x = model.apply(variables, ids, method="embed")
    x = model.apply(variables, x, positions, segments, method="stage")
    np.testing.assert_array_equal(
        model.apply(variables, x, method="logits"), model.apply(variables, ids, positions, segments)
    )


def test_chunks_of_stacked_layers_run_the_whole_stack():
    model = build_model(make_cfg(scan_layers=True, num_layers=4))
    ids, positions, segments = packed_batch(np.random.default_rng(0))
    params = model.init(jax.random.key(0), ids, positions, segments)["params"]
    x = model.apply({"params": params}, ids, method="embed")
    whole = model.apply({"params": params}, x, positions, segments, method="stage")
    chunk = model.chunk(2)
    for half in (slice(0, 2), slice(2, 4)):
        layers = jax.tree.map(lambda p, s=half: p[s], params["layers"])
        x = chunk.apply({"params": {"layers": layers}}, x, positions, segments, method="stage")
    np.testing.assert_allclose(x, whole, rtol=1e-6, atol=1e-6)


class _ExtraNormBlock(nn.Module):
    """InternLM's block followed by one more norm."""

    args: ModelArgs
    scan_mode: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids, layer_idx):
        out = DecoderBlock(self.args, name="block")(x, positions, segment_ids, layer_idx)
        out = make_norm(self.args, "out_norm")(out)
        return (out, None) if self.scan_mode else out


def test_block_cls_sets_the_stacked_block():
    class ExtraNorm(InternLM):
        block_cls = _ExtraNormBlock

    model = ExtraNorm.from_config(make_cfg())
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
    assert sorted(params) == ["embedding", "head", "layers_0", "layers_1", "norm"]
    assert sorted(params["layers_0"]) == ["block", "out_norm"]
