"""Packed training steps with the Pallas flash kernel (interpret mode) train exactly like the XLA
reference, on one device and on a data x tensor mesh (the kernel then runs per shard)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from parallel_helpers import fixed_batches, run_steps, tiny_config

# head_dim 64, the smallest the kernel takes; two kv heads so "tensor" = 2 splits both head counts.
MODEL = dict(num_attention_heads=4, num_kv_attention_heads=2, hidden_size=256, multiple_of=32)


@pytest.fixture(scope="module")
def batches():
    return fixed_batches(n_steps=2)


@pytest.fixture(scope="module")
def reference(batches):
    return run_steps(tiny_config(**MODEL, attn_impl="xla"), jax.devices()[:1], batches)


def assert_same(run, ref):
    np.testing.assert_allclose(run.losses, ref.losses, rtol=1e-5)
    got, want = jax.device_get(run.state.params), jax.device_get(ref.state.params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        # Adam divides by sqrt(v): a near-zero gradient summed in another order can move a weight by
        # a few 1e-5 at lr 1e-3 (3.9e-5 on one embedding entry under the pipeline, seen on 2-core
        # x86 CPUs); a wrong gradient moves weights by ~lr per step.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=6e-5, err_msg=jax.tree_util.keystr(path))


def test_packed_step_one_device(reference, batches):
    run = run_steps(tiny_config(**MODEL, attn_impl="pallas_gpu"), jax.devices()[:1], batches)
    assert_same(run, reference)
    assert reference.losses[1] < reference.losses[0]


def all_gathers(hlo: str) -> int:
    return hlo.count(" all-gather(") + hlo.count(" all-gather-start(")


@pytest.mark.slow
def test_packed_step_data_and_tensor_mesh(reference, batches):
    parallel = dict(zero1=1, tensor=dict(size=2, mode="mtp"))
    runs = {
        impl: run_steps(tiny_config(parallel, **MODEL, attn_impl=impl), jax.devices()[:8], batches)
        for impl in ("pallas_gpu", "xla")
    }
    assert_same(runs["pallas_gpu"], reference)
    # The kernel runs per shard (rows over data, heads over tensor): it adds no gathers of its
    # inputs to those the layout itself needs.
    assert all_gathers(runs["pallas_gpu"].hlo) == all_gathers(runs["xla"].hlo)


def test_kernel_is_wrapped_per_shard_on_a_mesh():
    """A custom kernel call cannot be split by XLA, so on a mesh it runs inside shard_map with rows
    over the batch axes and heads over "tensor"; without a mesh it is called plainly."""
    import flax.linen as nn
    import jax.numpy as jnp

    from internevo_jax.config import parallel_sizes
    from internevo_jax.model.attention.pallas_gpu import BlockSizes, pallas_attention
    from internevo_jax.parallel import build_mesh, logical_axis_rules

    cfg = tiny_config(dict(zero1=1, tensor=dict(size=2, mode="mtp")), **MODEL)
    mesh = build_mesh(parallel_sizes(cfg, 8), jax.devices()[:8])
    q = jnp.ones((8, 64, 4, 64), jnp.float32)
    kv = jnp.ones((8, 64, 2, 64), jnp.float32)
    seg = jnp.ones((8, 64), jnp.int32)

    def attend(q, k, v, s):
        return pallas_attention(q, k, v, s, scale=0.1, block_sizes=BlockSizes(32, 32, 32, 32), interpret=True)

    with jax.set_mesh(mesh), nn.logical_axis_rules(logical_axis_rules(cfg)):
        text = str(jax.make_jaxpr(attend)(q, kv, kv, seg))
    assert "shard_map" in text and "'tensor'" in text and "'data'" in text
    assert "shard_map" not in str(jax.make_jaxpr(attend)(q, kv, kv, seg))
    # One kv head does not split over tensor=2: heads run replicated, rows still split, same result.
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    kv1 = jnp.asarray(rng.normal(size=(8, 64, 1, 64)), jnp.float32)
    with jax.set_mesh(mesh), nn.logical_axis_rules(logical_axis_rules(cfg)):
        sharded = jax.jit(attend)(q, kv1, kv1, seg)
    np.testing.assert_allclose(sharded, attend(q, kv1, kv1, seg), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_packed_step_pipeline(batches):
    """pp=2 with stacked layers: the kernel's shard_map runs inside the stage vmap."""
    model = dict(MODEL, num_layers=4, scan_layers=True)
    ref = run_steps(tiny_config(**model, attn_impl="xla"), jax.devices()[:1], batches)
    cfg = tiny_config(dict(zero1=1, pipeline=dict(size=2)), **model, attn_impl="pallas_gpu")
    assert_same(run_steps(cfg, jax.devices()[:8], batches), ref)
