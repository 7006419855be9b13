"""Causal attention forward + backward, every attention backend side by side, unpacked and packed.

    python benchmarks/attention.py                      # the full case on a GPU / TPU: B2 H16 D128, S 4096 and 8192
    python benchmarks/attention.py --small              # a small case (CPU: proves the script works)
    python benchmarks/attention.py --write benchmarks/RESULTS.md

Cases per sequence length S: unpacked (one sequence per row), and packed rows with segments
[1024, 512, 1536, 1024] and [2048, 1000, 1048] (scaled to S; at S=8192 the pattern repeats).
TFLOP/s counts useful FLOPs only: the visible (query, key) pairs of each row, sum over segments
of L (L + 1) / 2, times 4 * D per pair for the forward (two matmuls) and 2.5x that for the
backward (FlashAttention's convention: 3.5x the forward in all). A kernel that skips no tile does
the same useful work in more time. Each backend runs as its support check allows on this platform
(explicitly named, so interpret-mode kernels run on CPU, marked as such); on a GPU, packed rows
also run cuDNN's dense-mask route next to its segment-offset one, and jax's own Pallas-Triton
kernel (`jax_pallas_mha`, segment_ids, 64-size backward blocks) is a reference. Every output and
gradient is checked against the `xla` backend before it is timed.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from internevo_jax.model.attention import (
    BACKENDS,
    cudnn,
    detect_platform,
    select_attention_backend,
    xla_attention,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared results helper, also when imported
import _results  # noqa: E402

PATTERNS = {
    "packed [1024, 512, 1536, 1024]": [1024, 512, 1536, 1024],
    "packed [2048, 1000, 1048]": [2048, 1000, 1048],
}


def segment_ids(lengths: list[int] | None, seq_len: int, batch: int) -> np.ndarray | None:
    """Rows of `lengths` (the 4096-token pattern scaled to seq_len; repeated when longer)."""
    if lengths is None:
        return None
    unit = sum(lengths)
    if seq_len >= unit:
        lengths = lengths * (seq_len // unit)
    else:
        lengths = [max(1, n * seq_len // unit) for n in lengths]
        lengths[-1] += seq_len - sum(lengths)
    row = np.repeat(np.arange(1, len(lengths) + 1), lengths).astype(np.int32)
    return np.broadcast_to(row, (batch, seq_len)).copy()


def useful_flops(seg: np.ndarray | None, batch: int, seq_len: int, heads: int, head_dim: int) -> float:
    if seg is None:
        pairs = batch * seq_len * (seq_len + 1) / 2
    else:
        pairs = sum(n * (n + 1) / 2 for row in seg for n in np.unique(row, return_counts=True)[1])
    return 3.5 * 4 * pairs * heads * head_dim


def fwd_bwd(fn, seg):
    def loss(q, k, v, do):
        return jnp.sum(fn(q, k, v, seg).astype(jnp.float32) * do)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def time_it(step, args, iters: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of `iters` back-to-back calls (seconds)."""
    jax.block_until_ready(step(*args))  # compile + warm up
    jax.block_until_ready(step(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = step(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / iters)
    return statistics.median(samples)


def candidates(platform: str, dtype, head_dim: int, heads: int, kv_heads: int, seq_len: int, packed: bool):
    """(label, fn(q, k, v, seg)) for every backend that runs this case here."""
    out = []
    for backend in BACKENDS:
        try:
            choice = select_attention_backend(
                backend.name,
                platform,
                dtype=dtype,
                head_dim=head_dim,
                has_segments=packed,
                num_heads=heads,
                num_kv_heads=kv_heads,
                seq_len=seq_len,
            )
        except ValueError as err:
            print(f"  {backend.name}: skipped ({err})", file=sys.stderr)
            continue
        label = backend.name + (" (interpret)" if "interpret" in choice.reason else "")
        if backend.name == "cudnn" and packed:
            label += " (segment offsets)" if "segment offsets" in choice.reason else " (dense mask)"
        out.append((label, functools.partial(choice.fn, scale=head_dim**-0.5)))
    if platform == "gpu" and packed and not any(label == "cudnn (dense mask)" for label, _ in out):
        # The public route side by side with the segment-offset one.
        out.append(("cudnn (dense mask)", functools.partial(cudnn.dpa_attention, scale=head_dim**-0.5)))
    if platform == "gpu":
        from jax.experimental.pallas.ops.gpu import attention as jax_pallas

        blocks = jax_pallas.BlockSizes(128, 64, 64, 64, 64, 64)

        def reference(q, k, v, s):
            if k.shape[2] != q.shape[2]:  # jax's kernel has no GQA
                k, v = (jnp.repeat(x, q.shape[2] // k.shape[2], axis=2) for x in (k, v))
            return jax_pallas.mha(q, k, v, s, sm_scale=head_dim**-0.5, causal=True, block_sizes=blocks)

        out.append(("jax_pallas_mha", reference))
    return out


def run(args) -> list[dict]:
    platform = detect_platform()
    dtype = jnp.dtype(args.dtype)
    rng = np.random.default_rng(0)
    rows = []
    for seq_len in args.seq_len:
        for case, lengths in [("unpacked", None), *PATTERNS.items()]:
            seg = segment_ids(lengths, seq_len, args.batch)
            shape_q = (args.batch, seq_len, args.heads, args.head_dim)
            shape_kv = (args.batch, seq_len, args.kv_heads, args.head_dim)
            q, do = (jnp.asarray(rng.normal(size=shape_q), dtype) for _ in range(2))
            k, v = (jnp.asarray(rng.normal(size=shape_kv), dtype) for _ in range(2))
            seg_j = None if seg is None else jnp.asarray(seg)
            flops = useful_flops(seg, args.batch, seq_len, args.heads, args.head_dim)
            want = fwd_bwd(functools.partial(xla_attention, scale=args.head_dim**-0.5), seg_j)(q, k, v, do)
            print(f"S={seq_len} {case}", file=sys.stderr)
            for label, fn in candidates(
                platform, dtype, args.head_dim, args.heads, args.kv_heads, seq_len, seg is not None
            ):
                step = fwd_bwd(fn, seg_j)
                got = step(q, k, v, do)
                error = max(
                    float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))
                    if a.ndim  # the gradients (the loss is a sum over every output element)
                )
                seconds = time_it(step, (q, k, v, do), args.iters, args.repeats)
                rows.append(
                    dict(
                        seq_len=seq_len,
                        case=case,
                        backend=label,
                        ms=seconds * 1e3,
                        tflops=flops / seconds / 1e12,
                        max_grad_error=error,
                    )
                )
                print(
                    f"  {label}: {seconds * 1e3:.3f} ms, {flops / seconds / 1e12:.3g} TFLOP/s",
                    file=sys.stderr,
                )
    return rows


def markdown(rows: list[dict], args, command: str) -> str:
    env = _results.environment()
    notes = [
        f"B{args.batch} H{args.heads} (kv {args.kv_heads}) D{args.head_dim} {args.dtype}; median over "
        f"{args.repeats} x {args.iters} calls; useful FLOPs only (3.5 x 4 x D x visible pairs); "
        "'vs first' = time of the first backend / this one."
    ]
    table = [
        "| S | case | backend | ms | TFLOP/s | vs first | max grad error vs xla |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    first = {}
    for row in rows:
        key = (row["seq_len"], row["case"])
        first.setdefault(key, row["ms"])
        table.append(
            f"| {row['seq_len']} | {row['case']} | {row['backend']} | {row['ms']:.3f} | {row['tflops']:.3g} | "
            f"{first[key] / row['ms']:.2f}x | {row['max_grad_error']:.2e} |"
        )
    return _results.section(f"Attention fwd+bwd on {env['device_kind']}", command, env, notes, table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="B1 H2 (kv 1) D64 fp32, S 512: a quick CPU case")
    parser.add_argument("--seq_len", type=int, nargs="+", help="default: 4096 8192 (512 with --small)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv_heads", type=int, default=16)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", metavar="RESULTS_MD", help="append the table to this file")
    args = parser.parse_args(argv)
    if args.small:
        args.batch, args.heads, args.kv_heads, args.head_dim, args.dtype = 1, 2, 1, 64, "float32"
    args.seq_len = args.seq_len or ([512] if args.small else [4096, 8192])
    table = markdown(run(args), args, _results.command_line("benchmarks/attention.py", argv))
    print(table)
    if args.write:
        _results.append(args.write, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
