"""The MoE feed-forward layer forward + backward: GShard vs Dropless routing, 8 vs 64 experts, the
"tiled" vs "ragged_dot" grouped matmul, next to a dense MLP with the FLOPs of the active experts.

    python benchmarks/bench_moe.py                                   # the CPU case (a few minutes on 2 cores)
    python benchmarks/bench_moe.py --write benchmarks/RESULTS.md     # ... appended to RESULTS.md

Each variant is `internevo_jax.model.moe.layer.MoEFeedForward` (router, routing, grouped expert
MLPs; no mesh: the single-device path) under one `jax.jit` of value_and_grad over its parameters and
input, on `--rows` x `--seq` tokens of width `--hidden`, experts `--expert_hidden` wide, top-k
`--top_k`. The reference is the dense gated MLP (`FeedForward`) of width top_k x expert_hidden: the
work of the experts each token is routed to, with nothing for routing, sorting or padding.
"vs dense" = the variant's tokens/s over the reference's. FLOPs: XLA's own count of the compiled step
(`cost_analysis()["flops"]`, which counts a loop body once) and the matmul FLOPs of the step's jaxpr
with scan bodies times their length; the tiled dropless path pads every expert's rows to a tile
boundary with tile <= the mean rows per expert, so its expert matmuls stay within twice the dense
reference's (checked at the end; exit status 1 if not).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np

from internevo_jax.config import load_config
from internevo_jax.model import build_model
from internevo_jax.model.layers import FeedForward
from internevo_jax.model.moe.layer import MoEFeedForward
from internevo_jax.model.moe.settings import DROPLESS, GSHARD

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared results helper, also when imported
import _results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def base_args(hidden: int):
    """ModelArgs of configs/demo_moe.py (fp32) at width `hidden`: the MoE fields are set per variant."""
    cfg = load_config(
        str(REPO / "configs/demo_moe.py"),
        [f"model.hidden_size={hidden}", "model.dtype=torch.float32"],
        log=lambda *_: None,
    )
    return build_model(cfg).args


def moe_args(base, *, experts: int, top_k: int, expert_hidden: int, routing: str, impl: str):
    moe = dataclasses.replace(
        base.moe,
        num_experts=experts,
        top_k=top_k,
        expert_hidden_size=expert_hidden,
        routing=routing,
        grouped_matmul=impl,
    )
    return dataclasses.replace(base, moe=moe, platform=jax.default_backend())


def step_fn(module):
    """jit(value_and_grad) of sum(out * dy) over (params, x): the layer's forward and backward."""

    def loss(params, x, dy):
        out = module.apply({"params": params}, x, 0, mutable=["moe"])[0]
        return jnp.sum(out.astype(jnp.float32) * dy)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def matmul_flops(fn, args) -> float:
    """2 x M x N x K of every dot_general in the jaxpr of `fn`, a scan's body times its length
    (ragged_dot: its rows times their own group's matrix, the useful work)."""

    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                k = np.prod([lhs[i] for i in lhs_contract])
                total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * k
            elif name.startswith("ragged_dot"):
                # M x K x N whichever of them is ragged (forward, input or weight gradient)
                sizes = [np.prod(v.aval.shape, dtype=np.float64) for v in (*eqn.invars[:2], eqn.outvars[0])]
                total += 2.0 * np.sqrt(np.prod(sizes) / eqn.invars[2].aval.shape[0])
            times = eqn.params.get("length", 1) if name == "scan" else 1
            for p in eqn.params.values():
                for sub in p if isinstance(p, list | tuple) else [p]:
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        total += times * count(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        total += times * count(sub)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def compiled_flops(step, args) -> float:
    analysis = step.lower(*args).compile().cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0]
    return float(analysis["flops"])


def time_it(step, args, iters: int) -> list[float]:
    jax.block_until_ready(step(*args))  # compile and warm up
    jax.block_until_ready(step(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - t0)
    return times


def measure(name: str, module, x, dy, iters: int) -> dict:
    params = module.init(jax.random.key(0), x, 0)["params"]
    step = step_fn(module)
    flops = compiled_flops(step, (params, x, dy))
    matmul = matmul_flops(step, (params, x, dy))
    times = time_it(step, (params, x, dy), iters)
    median = statistics.median(times)
    tokens = x.shape[0] * x.shape[1]
    row = dict(name=name, median=median, tokens_s=tokens / median, flops=flops, matmul=matmul)
    print(
        f"{name:38s} {median:8.4f} s  {tokens / median:9.0f} tokens/s  XLA {flops / 1e9:8.2f} GFLOP  "
        f"matmul {matmul / 1e9:8.2f} GFLOP",
        flush=True,
    )
    return row


def run(args) -> list[dict]:
    base = base_args(args.hidden)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.rows, args.seq, args.hidden)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((args.rows, args.seq, args.hidden)), jnp.float32)
    dense = FeedForward(base.replace_mlp(args.top_k * args.expert_hidden))
    rows = [measure(f"dense MLP, width {args.top_k} x {args.expert_hidden}", dense, x, dy, args.iters)]
    rows[0]["reference"] = True
    for experts in args.experts:
        for routing in (GSHARD, DROPLESS):
            for impl in args.impl:
                if impl == "ragged_dot" and experts > args.ragged_max_experts:
                    continue  # on CPU ragged_dot is one dense matmul per expert: E / k times the work
                a = moe_args(
                    base,
                    experts=experts,
                    top_k=args.top_k,
                    expert_hidden=args.expert_hidden,
                    routing=routing,
                    impl=impl,
                )
                name = f"{routing}, {experts} experts, {impl}"
                row = measure(name, MoEFeedForward(a), x, dy, args.iters)
                # the router's matmuls (forward, and the gradients of its input and weight)
                router = 3 * 2.0 * x.shape[0] * x.shape[1] * args.hidden * experts
                row.update(routing=routing, experts=experts, impl=impl, router=router)
                rows.append(row)
    return rows


def markdown(rows: list[dict], args, command: str) -> str:
    ref = rows[0]
    env = _results.environment()
    env["device_kind"] = args.machine or env["device_kind"]
    notes = [
        f"flax {flax.__version__}.",
        f"{args.rows} x {args.seq} = {args.rows * args.seq} tokens of width {args.hidden} (fp32), experts "
        f"{args.expert_hidden} wide, top-{args.top_k}; GShard capacity factor 1.0 (choices past an "
        "expert's capacity dropped). Median over "
        f"{args.iters} jitted forward + backward calls after 2 warm-up calls; 'vs dense' = tokens/s over "
        f"the dense MLP of width {args.top_k} x {args.expert_hidden}; 'matmul vs dense' = matmul GFLOP "
        "over the dense MLP's. 'XLA GFLOP' = `compile().cost_analysis()['flops']`, which counts a loop "
        "body once (the tiled grouped matmul is a scan over tiles, so its figure is far too low; "
        "ragged_dot's shows XLA:CPU's expansion to every expert); 'matmul GFLOP' = 2MNK of every "
        "matmul in the step's jaxpr, scan bodies times their length (ragged_dot: the useful work, "
        "each row times its own expert); 'experts' matmuls' leaves out the router's 6 x tokens x "
        "hidden x experts.",
    ]
    table = [
        "| variant | median step (s) | tokens/s | vs dense | XLA GFLOP | matmul GFLOP | matmul vs dense "
        "| experts' matmuls vs dense |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        experts = (r["matmul"] - r.get("router", 0.0)) / ref["matmul"]
        table.append(
            f"| {r['name']} | {r['median']:.4f} | {r['tokens_s']:.0f} | {r['tokens_s'] / ref['tokens_s']:.2f}x "
            f"| {r['flops'] / 1e9:.2f} | {r['matmul'] / 1e9:.2f} | {r['matmul'] / ref['matmul']:.2f}x "
            f"| {experts:.2f}x |"
        )
    title = f"MoE layer fwd+bwd on {env['device_kind']}: GShard vs Dropless, grouped matmuls, dense reference"
    return _results.section(title, command, env, notes, table)


def check_dropless_flops(rows: list[dict]) -> list[str]:
    """The tiled Dropless rows whose expert matmuls exceed twice the dense reference's FLOPs."""
    ref = rows[0]["matmul"]
    return [
        f"{r['name']}: {(r['matmul'] - r['router']) / ref:.3f}x the dense FLOPs"
        for r in rows[1:]
        if r["routing"] == DROPLESS and r["impl"] == "tiled" and r["matmul"] - r["router"] > 2.01 * ref
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--expert_hidden", type=int, default=256)
    parser.add_argument("--top_k", type=int, default=2)
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--impl", nargs="+", default=["tiled", "ragged_dot"], choices=["tiled", "ragged_dot"])
    parser.add_argument(
        "--ragged_max_experts", type=int, default=64, help="skip ragged_dot above this many experts"
    )
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--machine", help="the machine's name in the results (default: jax's device kind)")
    parser.add_argument("--write", metavar="RESULTS_MD", help="append the table to this file")
    args = parser.parse_args(argv)
    rows = run(args)
    text = markdown(rows, args, _results.command_line("benchmarks/bench_moe.py", argv))
    over = check_dropless_flops(rows)
    if over:
        text += "\nOver twice the dense FLOPs: " + "; ".join(over) + "\n"
    print(text)
    if args.write:
        _results.append(args.write, text)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
