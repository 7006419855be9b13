"""A tiny InternLM, fixed batches and a 3-step run on a chosen mesh, shared by the parallel tests."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from internevo_jax.config import config_from_dict, parallel_sizes
from internevo_jax.model import build_model
from internevo_jax.optim import DynamicLossScaler, build_optimizer
from internevo_jax.parallel import build_mesh, logical_axis_rules, put_batch
from internevo_jax.trainer import create_train_state, make_train_step

VOCAB = 128
SEQ = 16
ROWS = 8
MICRO_NUM = 2
# LLVM optimisation dominates compile time on CPU and buys nothing for these tiny programs.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def tiny_config(parallel: dict | None = None, **model):
    """A 2-layer fp32 InternLM whose every dimension splits over 2, 4 or 8 devices."""
    model_dict = dict(
        num_attention_heads=4,
        num_kv_attention_heads=4,
        hidden_size=32,
        num_layers=2,
        vocab_size=VOCAB,
        mlp_ratio=2.0,
        multiple_of=32,
        dtype="torch.float32",
        use_flash_attn=False,
    )
    model_dict.update(model)
    return config_from_dict(
        {
            "model": model_dict,
            "data": dict(seq_len=SEQ, micro_num=MICRO_NUM, micro_bsz=1, total_steps=10),
            "parallel": parallel or dict(zero1=1),
            "adam": dict(lr=1e-3),
            "hybrid_zero_optimizer": dict(clip_grad_norm=1.0),
        },
        log=lambda *_: None,
    )


def fixed_batches(n_steps: int = 3, seed: int = 5) -> list[dict]:
    """[micro_num, ROWS, SEQ] int32 batches of two packed segments per row; the same batch every
    step, so the loss must fall."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(1):
        shape = (MICRO_NUM, ROWS, SEQ)
        ids = rng.integers(0, VOCAB, size=shape)
        cut = rng.integers(3, SEQ - 3, size=shape[:2])[..., None]
        t = np.arange(SEQ)
        first = t < cut
        labels = np.where(t == SEQ - 1, -100, np.roll(ids, -1, axis=-1))
        labels = np.where(t == cut - 1, -100, labels)
        out.append(
            {
                "input_ids": ids.astype(np.int32),
                "labels": labels.astype(np.int32),
                "positions": np.where(first, t, t - cut).astype(np.int32),
                "segment_ids": np.where(first, 1, 2).astype(np.int32),
            }
        )
    return out * n_steps


@dataclasses.dataclass
class Run:
    losses: list[float]
    state: object
    shardings: object
    mesh: object
    rules: object
    hlo: str  # the compiled step, after SPMD partitioning


def run_steps(cfg, devices, batches) -> Run:
    """Train `batches` on a mesh over `devices` with the compiled train step."""
    sizes = parallel_sizes(cfg, len(devices))
    mesh = build_mesh(sizes, devices)
    rules = logical_axis_rules(cfg)
    model = build_model(cfg)
    tx, _, _ = build_optimizer(cfg)
    scaler = DynamicLossScaler.from_config(cfg)
    state, shardings = create_train_state(model, tx, scaler, mesh, rules, jax.random.key(3), cfg.data.seq_len)
    step = make_train_step(model, tx, scaler, mesh, rules, shardings)
    placed = [put_batch(b, mesh, b["input_ids"].shape[1]) for b in batches]
    # Compile once through lower() so the test can read the partitioned program as well.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), jax.default_matmul_precision("highest"):
        compiled = step.jitted.lower(state, placed[0], jnp.int32(0)).compile(COMPILER_OPTIONS)
    losses = []
    for i, batch in enumerate(placed):
        state, metrics = compiled(state, batch, jnp.int32(i))
        losses.append(float(metrics["loss"]))
    return Run(losses, state, shardings, mesh, rules, compiled.as_text())


def assert_same_training(run, ref, atol=5e-6):
    np.testing.assert_allclose(run.losses, ref.losses, rtol=1e-5)
    got, want = jax.device_get(run.state.params), jax.device_get(ref.state.params)
    # Adam divides by sqrt(v): a near-zero gradient summed in another order can move a weight by a
    # few 1e-6 at lr 1e-3 (seen on jax 0.12); a wrong gradient moves it by ~lr per step.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=jax.tree_util.keystr(path))
    assert ref.losses[-1] < ref.losses[0]


def spec(shardings, *path):
    """The leaf's PartitionSpec with mesh axes of size 1 dropped (they split nothing)."""
    node = shardings
    for key in path:
        node = node[key]
    sizes = dict(node.mesh.shape)

    def keep(entry):
        names = tuple(a for a in ((entry,) if isinstance(entry, str) else entry or ()) if sizes[a] > 1)
        return names[0] if len(names) == 1 else (names or None)

    entries = [keep(e) for e in node.spec]
    while entries and entries[-1] is None:
        entries.pop()
    return P(*entries)
