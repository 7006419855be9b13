"""benchmarks/plain_step.py is our model: same parameters, same loss and gradients, same parameter count."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.trainer import create_model
from internevo_jax.trainer.loss import cross_entropy
from internevo_jax.trainer.step import make_grads_fn

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_plain():
    spec = importlib.util.spec_from_file_location("plain_step", ROOT / "benchmarks" / "plain_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(micro_num=1):
    return config_from_dict(
        {
            "model": dict(
                num_attention_heads=4,
                hidden_size=32,
                num_layers=2,
                vocab_size=97,
                mlp_ratio=2.0,
                dtype="torch.float32",
                use_flash_attn=False,
            ),
            "data": dict(seq_len=16, micro_num=micro_num, micro_bsz=2, pack_sample_into_one=True),
            "parallel": dict(zero1=1),
            "hybrid_zero_optimizer": dict(clip_grad_norm=1.0),
        },
        log=lambda *_: None,
    )


def unboxed(tree):
    return jax.tree.map(
        lambda p: p.unbox() if hasattr(p, "unbox") else p, tree, is_leaf=lambda p: hasattr(p, "unbox")
    )


def test_plain_model_is_our_model():
    plain = load_plain()
    cfg = tiny_config()
    model = create_model(cfg)
    batch = plain.make_batch(cfg, jax.random.key(1))  # [rows=2, T=16], one sequence per row
    ids, labels = batch["input_ids"], batch["labels"]
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
    segments = jnp.ones_like(ids)
    ours = unboxed(jax.jit(model.init)(jax.random.key(0), ids, positions, segments)["params"])
    params = plain.from_ours(ours)

    # the same tree as the plain model's own initialisation, and the same number of parameters
    fresh = plain.init_params(cfg, jax.random.key(0))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, fresh)
    n_ours = sum(int(x.size) for x in jax.tree.leaves(ours))
    assert plain.param_count(params) == plain.param_count(fresh) == n_ours

    micro = {"input_ids": ids, "labels": labels, "positions": positions, "segment_ids": segments}
    with jax.default_matmul_precision("highest"):
        want = jax.jit(lambda p: cross_entropy(model.apply({"params": p}, ids, positions, segments), labels))(
            ours
        )
        got, g_plain = jax.jit(jax.value_and_grad(lambda p, b: plain.loss_fn(p, b, cfg)))(params, batch)
        # and the gradients, through our trainer's grads function
        g_ours, losses, _, _ = jax.jit(make_grads_fn(model))(
            ours, jax.tree.map(lambda x: x[None], micro), 1.0
        )
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    np.testing.assert_allclose(float(losses.mean()), float(want), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(plain.from_ours(g_ours)), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("micro_num", [1, 2])
def test_plain_step_trains_with_and_without_accumulation(micro_num):
    plain = load_plain()
    cfg = tiny_config(micro_num)
    params = plain.init_params(cfg, jax.random.key(0))
    batch = plain.make_batch(cfg, jax.random.key(1))
    assert batch["input_ids"].shape == ((2, 16) if micro_num == 1 else (micro_num, 2, 16))
    micro = (
        [batch] if micro_num == 1 else [jax.tree.map(lambda x, i=i: x[i], batch) for i in range(micro_num)]
    )
    loss_of = jax.jit(lambda p, b: plain.loss_fn(p, b, cfg))
    want = np.mean([float(loss_of(params, m)) for m in micro])
    opt_state = plain.make_optimizer(cfg).init(params)
    step = plain.make_step(cfg)
    params, opt_state, first = step(params, opt_state, batch)
    np.testing.assert_allclose(float(first), want, rtol=1e-5)  # the loss before the update
    for _ in range(3):
        params, opt_state, loss = step(params, opt_state, batch)
    assert float(loss) < float(first)
