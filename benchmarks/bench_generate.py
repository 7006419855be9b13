"""Generation speed: the key/value cache against full recompute, on the demo model.

    python benchmarks/bench_generate.py [--config configs/demo.py] [--ckpt PATH] [--new_tokens 256]
        [--prompt_len 16] [--batch 1] [--repeats 3] [--machine NAME] [--write benchmarks/RESULTS.md]

Random weights unless --ckpt names a checkpoint of the config's model. Greedy decoding of
--new_tokens tokens after random prompts (no eos, so every row runs the full length), each way
--repeats times after one warm-up call that compiles; the outputs of both ways must be identical.
Prints the median seconds of each, tokens/s, and the speed-up of the cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/demo.py")
    p.add_argument("--ckpt", help="checkpoint of the config's model (default: random weights)")
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--prompt_len", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--machine", help="machine name for the results section (default: jax's device kind)")
    p.add_argument("--write", help="append a section to this results file")
    return p.parse_args(argv)


def model_and_params(args):
    import jax
    import numpy as np

    from internevo_jax.config import load_config
    from internevo_jax.model import build_model

    cfg = load_config(args.config, log=lambda *a: None)
    if args.ckpt:
        from internevo_jax.generate import load_model_params

        model, params = load_model_params(cfg, args.ckpt)
        return cfg, model, params
    model = build_model(cfg)
    ids = np.zeros((1, 8), np.int32)
    params = jax.jit(model.init)(jax.random.key(0), ids, ids, ids)["params"]
    return cfg, model, jax.tree.map(lambda x: getattr(x, "value", x), params)


def timed(fn, repeats: int) -> tuple[list, list[float]]:
    out = fn()  # compiles
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return out, seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from internevo_jax.generation import Sampling, generate_ids

    cfg, model, params = model_and_params(args)
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, cfg.model.vocab_size, (args.batch, args.prompt_len)).tolist()
    budgets = [args.new_tokens] * args.batch
    greedy = Sampling()  # no eos: every row runs all new tokens
    results, rows = {}, []
    for strategy in ("cache", "recompute"):

        def run(strategy=strategy):
            return generate_ids(model, params, prompts, budgets, greedy, strategy=strategy)

        out, seconds = timed(run, args.repeats)
        results[strategy] = (out, statistics.median(seconds))
        median = results[strategy][1]
        rows.append(f"| {strategy} | {median:.3f} | {args.batch * args.new_tokens / median:.1f} |")
        print(f"{strategy}: median {median:.3f} s over {args.repeats} ({[round(s, 3) for s in seconds]})")
    same = results["cache"][0] == results["recompute"][0]
    ratio = results["recompute"][1] / results["cache"][1]
    print(f"greedy outputs identical: {same}; KV cache speed-up: {ratio:.1f}x")
    if args.write:
        import _results

        env = _results.environment()
        if args.machine:
            env["device_kind"] = args.machine
        m = cfg.model
        notes = [
            f"{args.config}: {m.num_layers} layers, hidden {m.hidden_size}, vocab {m.vocab_size}, {m.dtype}, "
            f"{'weights from ' + args.ckpt if args.ckpt else 'random weights'}; {args.batch} prompt(s) of "
            f"{args.prompt_len} random tokens, {args.new_tokens} new tokens each, greedy; median of "
            f"{args.repeats} calls after a warm-up call that compiles (the whole token loop is one "
            f"compiled while loop either way). Greedy outputs identical: {same}. Speed-up of the cache: "
            f"{ratio:.1f}x.",
        ]
        table = ["| way | median (s) | new tokens/s |", "| --- | --- | --- |", *rows]
        title = "Generation: KV cache vs full recompute"
        _results.append(
            args.write,
            _results.section(
                title, _results.command_line("benchmarks/bench_generate.py", argv), env, notes, table
            ),
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
