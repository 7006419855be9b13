"""Helpers for the model tests: a tiny stand-in for the run Config, packed batches, random params."""

from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np

from internevo_jax.config import ModelConfig


def _schema_defaults() -> dict:
    """Every ModelConfig field at its InternEvo default (what the real Config would hold)."""
    out = {}
    for f in dataclasses.fields(ModelConfig):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def make_cfg(**overrides):
    """An object with the Config's model attributes (attribute access only, like the real one):
    every ModelConfig field at its default, then the small test model's sizes; `seq_len` and
    `pack_sample_into_one` go to its `data`."""
    m = _schema_defaults()
    m.update(
        num_attention_heads=4,
        num_kv_attention_heads=4,
        hidden_size=64,
        num_layers=2,
        vocab_size=128,
        mlp_ratio=8 / 3,
        multiple_of=256,
        checkpoint=False,
        embed_grad_scale=1,
        apply_post_layer_norm=False,
        dtype="torch.float32",
        norm_type="rmsnorm",
        layer_norm_epsilon=1e-5,
        use_flash_attn=True,
        num_chunks=1,
        rope_base=10000,
        attn_impl="auto",
        scan_layers=False,
        remat_policy="full",
        compute_dtype=jnp.float32,
        matmul_precision="highest",
        mlp_hidden_size=96,
        checkpoint_layers=0,
    )
    top = dict(model_type="INTERNLM", use_fp32_norm=True)
    data = dict(seq_len=24, pack_sample_into_one=False)
    for key, value in overrides.items():
        (top if key in top else data if key in data else m)[key] = value
    if m.get("head_dim") is None:
        m["head_dim"] = m["hidden_size"] // m["num_attention_heads"]
    return types.SimpleNamespace(model=types.SimpleNamespace(**m), data=types.SimpleNamespace(**data), **top)


def packed_batch(rng: np.random.Generator, batch: int = 2, length: int = 24, vocab: int = 128):
    """Rows of 2-3 packed segments plus trailing padding (segment id 0), per-segment positions."""
    ids = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
    positions = np.zeros((batch, length), np.int32)
    segments = np.zeros((batch, length), np.int32)
    layouts = [[7, 9, 5], [11, 10]]  # lengths of the real segments; the rest is padding
    for b in range(batch):
        start = 0
        for seg_id, n in enumerate(layouts[b % len(layouts)], start=1):
            segments[b, start : start + n] = seg_id
            positions[b, start : start + n] = np.arange(n)
            start += n
        positions[b, start:] = np.arange(length - start)
    return jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segments)


def randomize_params(params, seed: int = 0):
    """Replace every leaf by random values of a scale that makes every term of the forward matter.

    Kernels ~ N(0, 1/fan_in), embedding/biases non-trivial, norm weights around 1.
    """
    rng = np.random.default_rng(seed)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    out = {}
    for path, leaf in flat:
        names = [getattr(p, "key", str(p)) for p in path]
        shape = leaf.shape
        if names[-1] == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[-2]), shape)
        elif names[-1] == "embedding":
            value = rng.normal(0.0, 1.0, shape)
        elif names[-1] == "bias" and "norm" not in names[-2]:
            value = rng.normal(0.0, 0.2, shape)
        elif names[-1] == "bias":
            value = rng.normal(0.0, 0.1, shape)
        else:  # norm scale
            value = 1.0 + rng.normal(0.0, 0.2, shape)
        out[tuple(names)] = np.asarray(value, np.float32)

    def rebuild(path, leaf):
        return jnp.asarray(out[tuple(getattr(p, "key", str(p)) for p in path)])

    return jax.tree_util.tree_map_with_path(rebuild, params)
