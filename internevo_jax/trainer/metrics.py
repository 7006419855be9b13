"""Throughput metrics (InternEvo's tflops, tgs, our mfu) and per-batch packing statistics."""

from __future__ import annotations

import math

import numpy as np

from internevo_jax.config import Config
from internevo_jax.monitor import TGS_KEY, ordered
from internevo_jax.names import EXPERT_WEIGHT_NAMES

# Dense bf16 peak FLOP/s per chip, by a substring of jax's device_kind.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("v6 lite", 918e12),
    ("v6e", 918e12),
    ("v5 lite", 197e12),
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("v5", 459e12),
    ("v4", 275e12),
)


def peak_flops_for(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device, or None when the device is not in the table."""
    for needle, flops in PEAK_FLOPS:
        if needle.lower() in device_kind.lower():
            return flops
    return None


def internevo_step_flops(cfg: Config, dp_size: int, micro_num: int | None = None) -> float:
    """FLOPs of one step by InternEvo's formula (kept so logs compare with InternEvo's).

    F = f * [(8 + 4*1.5*mlp_ratio) * B*s*h^2 + 4*B*s^2*h] * L + 6*B*s*h*V, with f = 4 when
    activations are recomputed, else 3, and B = micro_bsz * micro_num * dp.
    """
    m, d = cfg.model, cfg.data
    micro_num = d.micro_num if micro_num is None else micro_num
    b = d.micro_bsz * micro_num * dp_size
    s, h, layers, v = d.seq_len, m.hidden_size, m.num_layers, m.vocab_size
    f = 4 if m.checkpoint_layers > 0 else 3
    return f * ((8 + 4 * 1.5 * m.mlp_ratio) * b * s * h * h + 4 * b * s * s * h) * layers + 6 * b * s * h * v


def dense_params(params, moe=None) -> int:
    """Parameter count without the input embedding (the N of the MFU formula); for an MoE model
    (`moe`: its MoEArgs) the routed experts count top_k / num_experts of their weights, the ones
    a token is computed with."""
    import jax

    total = 0.0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", None) for k in path]
        if "embedding" in keys:
            continue
        count = float(np.prod(leaf.shape))
        if (
            moe is not None
            and keys[-1] in EXPERT_WEIGHT_NAMES
            and len(keys) >= 2
            and keys[-2] == "feed_forward"
        ):
            count *= moe.top_k / moe.num_experts
        total += count
    return int(total)


def model_flops_per_token(cfg: Config, n_dense: int) -> float:
    """6*N_dense + 6*L*h*s: training FLOPs per token for MFU (causal attention counted once)."""
    m = cfg.model
    return 6.0 * n_dense + 6.0 * m.num_layers * m.hidden_size * cfg.data.seq_len


def batch_statistics(segment_ids: np.ndarray) -> dict:
    """InternEvo's per-batch packing stats for one data-parallel rank: segment_ids is [micro_num, length].

    num_samples_in_batch: segments over all micro-batches; largest_length: the longest segment;
    largest_batch / smallest_batch: most / fewest segments in one micro-batch.
    """
    counts, longest = [], 0
    for row in segment_ids:
        ids = row[row > 0]
        if ids.size == 0:
            counts.append(0)
            continue
        # segments are contiguous runs; a new run starts wherever the id changes
        starts = np.flatnonzero(np.diff(ids, prepend=ids[0] - 1) != 0)
        lengths = np.diff(np.append(starts, ids.size))
        counts.append(len(starts))
        longest = max(longest, int(lengths.max()))
    return {
        "num_samples_in_batch": int(sum(counts)),
        "largest_length": longest,
        "largest_batch": int(max(counts)),
        "smallest_batch": int(min(counts)),
    }


# Step outputs the record does not show under their own name: step_time feeds fwd_bwd_time, tflops,
# tgs and mfu; overflow is already counted by inf_nan_skip_batches; tokens by num_consumed_tokens.
# Everything else the step returns -- a loss function's extras included -- is shown as it is.
NOT_SHOWN = frozenset({"overflow", "tokens", "step_time"})


def step_record(
    cfg: Config,
    *,
    step: int,
    metrics: dict,
    context,
    segment_ids: np.ndarray,
    dp_size: int,
    world: int,
    flops_per_token: float,
    peak_flops: float | None,
) -> dict:
    """The record of one step, in the order of `monitor.RECORD_KEYS` (InternEvo's keys, then acc,
    perplexity, mfu), then the step's other metrics (per-type metrics, loss extras) as returned."""
    step_time = metrics["step_time"]
    micro_num = metrics["micro_num"]
    tokens_per_s = micro_num * cfg.data.packed_length * dp_size / step_time
    derived = {
        "tflops": round(internevo_step_flops(cfg, dp_size, micro_num) / (step_time * world * 1e12), 4),
        "step": step,
        TGS_KEY: round(tokens_per_s / world, 2),
        "num_consumed_tokens": context.num_consumed_tokens,
        "inf_nan_skip_batches": context.inf_nan_skip_batches,
        **batch_statistics(segment_ids),
        "fwd_bwd_time": round(step_time, 4),
        "mfu": round(flops_per_token * tokens_per_s / (world * peak_flops), 4) if peak_flops else math.nan,
    }
    return ordered({**derived, **{k: v for k, v in metrics.items() if k not in NOT_SHOWN}})
