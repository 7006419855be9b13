"""Refuse layouts the model's dimensions cannot be split into, with the arithmetic."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from internevo_jax.config import ConfigError
from internevo_jax.names import (
    ACT_HEADS_DIM,
    ACT_LENGTH,
    ACT_MLP_DIM,
    ACT_VOCAB_DIM,
    DATA,
    EMBED,
    EXPERT,
    EXPERT_MLP,
    EXPERTS,
    FSDP,
    HEADS,
    KV_HEADS,
    LAYERS,
    MLP,
    NORM,
    PIPELINE,
    TENSOR,
    VOCAB,
)

# mesh axis -> the config key that sets its size
_AXIS_KEYS = {
    TENSOR: "parallel.tensor.size",
    FSDP: "the zero1/weight group (parallel.zero1.size / parallel.weight.size)",
    PIPELINE: "parallel.pipeline.size",
    DATA: "the data-parallel size",
    EXPERT: "parallel.expert.size",
}


def _dims(args, seq_len: int | None) -> dict[str, list[tuple[int, str]]]:
    """Logical axis -> the model sizes that lie along it, each with the config key behind it."""
    dims = {
        HEADS: [
            (args.num_heads, "model.num_attention_heads"),
            (args.num_kv_heads, "model.num_kv_attention_heads"),
        ],
        KV_HEADS: [(args.num_kv_heads, "model.num_kv_attention_heads")],
        MLP: [
            (args.mlp_hidden_size, "the MLP width (model.hidden_size * mlp_ratio, rounded up to multiple_of)")
        ],
        VOCAB: [(args.vocab_size, "model.vocab_size")],
        EMBED: [(args.hidden_size, "model.hidden_size")],
        # q/k norms (Qwen3) are NORM-named too, one head wide.
        NORM: [(args.hidden_size, "model.hidden_size")]
        + ([(args.head_dim, "model.head_dim")] if args.qk_norm else []),
        LAYERS: [(args.num_layers, "model.num_layers")],
        ACT_HEADS_DIM: [
            (args.num_heads, "model.num_attention_heads"),
            (args.num_kv_heads, "model.num_kv_attention_heads"),
        ],
        ACT_MLP_DIM: [(args.mlp_hidden_size, "the MLP width")],
        ACT_VOCAB_DIM: [(args.vocab_size, "model.vocab_size")],
    }
    if args.moe is not None:
        dims[EXPERTS] = [(args.moe.num_experts, "model.num_experts")]
        dims[EXPERT_MLP] = [
            (
                args.moe.expert_hidden_size,
                "the expert MLP width (hidden_size * mlp_ratio, rounded up to multiple_of)",
            )
        ]
        if args.moe.num_shared_experts:
            dims[MLP].append((args.moe.shared_hidden_size, "the shared experts' MLP width"))
    if seq_len is not None:
        dims[ACT_LENGTH] = [(seq_len, "data.seq_len")]
    return dims


def check_layout(args, mesh_shape: Mapping[str, int], rules, *, seq_len: int | None = None) -> None:
    """ConfigError unless every model dimension the rules split over a mesh axis divides evenly.

    `args` is the model's ModelArgs; `mesh_shape` maps mesh axis names to sizes. The stacked
    "layers" axis is only split when the model stacks its layers (scan_layers).
    """
    problems = []
    dims = _dims(args, seq_len)
    for logical, axes in rules:
        if axes is None or logical not in dims:
            continue
        if logical == LAYERS and not args.scan_layers:
            continue
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        parts = int(np.prod([mesh_shape.get(a, 1) for a in names]))
        if parts <= 1:
            continue
        for size, key in dims[logical]:
            if size % parts:
                axis = " x ".join(f"{a} {mesh_shape.get(a, 1)}" for a in names)
                setting = " and ".join(_AXIS_KEYS.get(a, a) for a in names)
                problems.append(
                    f"{key} = {size} cannot be split over {axis}: {size} % {parts} = {size % parts} "
                    f"(set by {setting}); choose sizes so that {parts} divides {size}"
                )
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ConfigError(
            "parallel layout does not fit the model: " + "; ".join(unique) + ".", key="parallel"
        )
