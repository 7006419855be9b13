"""Packed-row attention on one NVIDIA GPU: cuDNN's segment offsets vs its dense mask vs XLA.

    python benchmarks/bench_attention_packed.py                    # B2 H16 D128 T4096, bf16
    python benchmarks/bench_attention_packed.py --seq 8192 --kv_heads 4 --window 1024

For each layout (a few long segments; many short ones; more runs than the segment tables hold)
every route runs forward + backward on the same bf16 inputs; one JSON line per route gives its
error against the XLA backend in fp32 (the loss, a sum of the output over real tokens, and the
largest q/k/v gradient error) and its median fwd+bwd time over `--iters` calls. The route the
model would take is printed first (`segment_route()`), so a run on a new jax version says
whether the private API was found.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from internevo_jax.model.attention import cudnn, xla_attention  # noqa: E402


def layouts(t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Segment ids [2, t] of three kinds of packed rows (ids follow packing: one run each)."""

    def row(lengths):
        ids = np.repeat(np.arange(1, len(lengths) + 1), lengths)[:t]
        return np.pad(ids, (0, t - len(ids)))  # trailing padding, id 0

    few = [row(rng.integers(t // 8, t // 2, size=8)) for _ in range(2)]
    many = [row(rng.integers(t // 64, t // 32, size=64)) for _ in range(2)]  # ~43 runs: under the cap
    over = [row(np.full(2 * cudnn.MAX_SEGMENTS, t // (2 * cudnn.MAX_SEGMENTS))) for _ in range(2)]
    return {"few long": np.stack(few), "many short": np.stack(many), "over the cap": np.stack(over)}


def loss_and_grads(fn, ids):
    """Jitted (loss, (dq, dk, dv)) of the attention output summed over real tokens."""

    def loss(q, k, v):
        return jnp.sum(fn(q, k, v, ids).astype(jnp.float32) * (ids > 0)[:, :, None, None])

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def timed(step, args, iters: int) -> float:
    jax.block_until_ready(step(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv_heads", type=int, default=16)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--iters", type=int, default=20)
    a = parser.parse_args()
    if jax.default_backend() != "gpu":
        sys.exit(f"bench_attention_packed.py needs an NVIDIA GPU (jax runs on {jax.default_backend()})")
    print(json.dumps({"jax": jax.__version__, "device": jax.devices()[0].device_kind,
                      "segment_route": cudnn.segment_route(a.window is not None),
                      "kv_offsets_follow_kv_heads": cudnn.kv_offsets_follow_kv_heads()}))  # fmt: skip
    rng = np.random.default_rng(0)
    shape_q, shape_kv = (a.batch, a.seq, a.heads, a.head_dim), (a.batch, a.seq, a.kv_heads, a.head_dim)
    q, k, v = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in (shape_q, shape_kv, shape_kv))
    common = dict(scale=a.head_dim**-0.5, sliding_window=a.window)
    routes = {
        "cudnn segment offsets": functools.partial(cudnn.segment_attention, **common),
        "cudnn dense mask": functools.partial(cudnn.dpa_attention, **common),
        "xla": functools.partial(xla_attention, **common),
    }
    for name, ids in layouts(a.seq, rng).items():
        ids = jnp.asarray(np.resize(ids, (a.batch, a.seq)), jnp.int32)
        runs = int(jnp.max(cudnn.segment_tables(ids, a.seq)[2]))
        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        ref_loss, ref_grads = loss_and_grads(routes["xla"], ids)(*f32)
        for route, fn in routes.items():
            step = loss_and_grads(fn, ids)
            loss, grads = step(q, k, v)
            errors = [float(jnp.max(jnp.abs(g.astype(jnp.float32) - r))) for g, r in zip(grads, ref_grads)]
            seconds = timed(step, (q, k, v), a.iters)
            print(json.dumps({"layout": name, "runs": runs, "route": route, "ms_fwd_bwd": round(seconds * 1e3, 3),
                              "loss_rel_err": abs(float(loss) - float(ref_loss)) / max(abs(float(ref_loss)), 1e-6),
                              "max_abs_err_dq_dk_dv": errors}))  # fmt: skip


if __name__ == "__main__":
    main()
