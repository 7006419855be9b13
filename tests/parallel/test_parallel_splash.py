"""Splash attention inside the sharded train step (Pallas interpret mode on 8 fake CPU devices):
the same losses and parameters as XLA attention through a pipeline x tensor x fsdp layout, where
the kernel's shard_map runs inside the pipeline's stage vmap."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from parallel_helpers import MICRO_NUM, ROWS, VOCAB, run_steps, tiny_config

SEQ = 128  # the smallest length the kernel takes: one 128-token block


def packed_batches(n_steps=2, seed=7):
    rng = np.random.default_rng(seed)
    shape = (MICRO_NUM, ROWS, SEQ)
    ids = rng.integers(0, VOCAB, size=shape)
    cut = rng.integers(10, SEQ - 10, size=shape[:2])[..., None]
    t = np.arange(SEQ)
    labels = np.where((t == SEQ - 1) | (t == cut - 1), -100, np.roll(ids, -1, axis=-1))
    batch = {
        "input_ids": ids.astype(np.int32),
        "labels": labels.astype(np.int32),
        "positions": np.where(t < cut, t, t - cut).astype(np.int32),
        "segment_ids": np.where(t < cut, 1, 2).astype(np.int32),
    }
    return [batch] * n_steps


def test_pipeline_tensor_fsdp_step_with_splash_matches_xla():
    layout = dict(zero1=-1, tensor=dict(size=2, mode="mtp"), pipeline=dict(size=2))
    runs = {}
    for impl in ("xla", "splash"):
        cfg = tiny_config(layout, attn_impl=impl, use_flash_attn=True, num_layers=2, scan_layers=True)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=SEQ))
        runs[impl] = run_steps(cfg, jax.devices()[:8], packed_batches())
    assert dict(runs["splash"].mesh.shape) == {"pipeline": 2, "data": 1, "expert": 1, "fsdp": 2, "tensor": 2}
    np.testing.assert_allclose(runs["splash"].losses, runs["xla"].losses, rtol=1e-5)
    got, want = (jax.device_get(runs[k].state.params) for k in ("splash", "xla"))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-6, err_msg=jax.tree_util.keystr(path))
