"""Tiny models with random weights, and the references generation is checked against."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

VOCAB = 101
PROMPTS = ([5, 17, 42, 8], [3, 9], [1, 2, 3, 4, 5, 6, 7])  # three lengths in one batch


def tiny_cfg(model_type: str, **model):
    """A 2-layer model with odd sizes (hidden 48, 6 heads over 2 kv heads, MLP 80, vocab 101)."""
    from internevo_jax.config import config_from_dict

    m = dict(
        num_layers=2,
        hidden_size=48,
        num_attention_heads=6,
        num_kv_attention_heads=2,
        vocab_size=VOCAB,
        mlp_ratio=80 / 48,
        multiple_of=16,
        dtype="torch.float32",
        no_bias=model_type != "INTERNLM",
        use_flash_attn=False,
    )
    m.update(model)
    return config_from_dict({"model_type": model_type, "model": m}, "<tiny>", log=lambda *a: None)


def random_params(cfg, seed: int = 0) -> dict:
    """Random fp32 params large enough that every term of the forward pass matters."""
    from internevo_jax.model import abstract_params, build_model

    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "scale":
            value = 1.0 + rng.normal(0, 0.2, leaf.shape)
        elif name in ("embedding", "bias"):
            value = rng.normal(0, 1.0 if name == "embedding" else 0.2, leaf.shape)
        else:
            value = rng.normal(0, 1.0 / np.sqrt(leaf.shape[-2]), leaf.shape)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract_params(build_model(cfg)))


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, ids):
    return model.apply({"params": params}, ids)


def forward_logits(model, params, rows: list[list[int]]) -> np.ndarray:
    """Logits [B, T, V] of one full forward over right-padded rows (no cache; one compilation per
    model and shape)."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return np.asarray(_apply(model, params, jnp.asarray(ids)))


def argmax_mismatches(model, params, prompts, outputs) -> list[tuple[int, int]]:
    """(row, step) where a new token is not the argmax of a full forward over the tokens before it."""
    logits = forward_logits(model, params, [list(p) + list(o) for p, o in zip(prompts, outputs, strict=True)])
    return [
        (b, j)
        for b, (p, o) in enumerate(zip(prompts, outputs, strict=True))
        for j, tok in enumerate(o)
        if int(np.argmax(logits[b, len(p) - 1 + j])) != tok
    ]
