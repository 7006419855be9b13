"""Our attention weights <-> the layout a Hugging Face class stores them in.

Two differences are permutations of the same numbers, so they are converted, never refused:

* how q/k/v are stored (names.QKV_LAYOUTS): three kernels, or one fused kernel grouped per kv
  head (InternLM2) or holding all q, then all k, then all v (Baichuan2's W_pack);
* the lane order of each q/k head: HF rotates halves (lanes i and i + D/2 pair up for RoPE);
  a model trained with qk_interleaved=True pairs adjacent lanes (2i, 2i + 1). Moving lane 2i to
  i and lane 2i + 1 to i + D/2 turns one into the other (a per-head q/k norm's weight moves too).

Both work on the unrolled {path: array} dict of one params tree; kernels are (in, out) here.

A third difference is only one of storage: an MoE layer stacks its experts' weights in one array
per matrix ([E, H, I] for w1/w3, [E, I, H] for w2), HF classes store one tensor per expert. On the
HF side of these functions every expert is its own (layers_i, feed_forward, expert_<e>, w1, kernel)
entry (`split_experts`), stacked back on the way in (`stack_experts`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from internevo_jax.hf.spec import EXPERT
from internevo_jax.names import EXPERT_WEIGHT_NAMES, QKV_CONCAT, QKV_SEPARATE

_SEPARATE = ("wq", "wk", "wv")


def _layer_prefixes(flat: dict[tuple[str, ...], Any]) -> list[str]:
    return sorted({p[0] for p in flat if p[0].startswith("layers_")})


def _split_fused(fused: np.ndarray, args: Any, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fused wqkv kernel [E, W] or bias [W] -> (q, k, v) with the same leading axes."""
    lead, d = fused.shape[:-1], args.head_dim
    hq, hkv = args.num_heads, args.num_kv_heads
    if layout == QKV_CONCAT:
        q, k, v = np.split(fused, [hq * d, (hq + hkv) * d], axis=-1)
        return q, k, v
    grouped = fused.reshape(*lead, hkv, hq // hkv + 2, d)
    q = grouped[..., :-2, :].reshape(*lead, hq * d)
    return q, grouped[..., -2, :].reshape(*lead, hkv * d), grouped[..., -1, :].reshape(*lead, hkv * d)


def _fuse(q: np.ndarray, k: np.ndarray, v: np.ndarray, args: Any, layout: str) -> np.ndarray:
    """(q, k, v) kernels [E, .] or biases [.] -> one fused array in `layout`."""
    if layout == QKV_CONCAT:
        return np.concatenate([q, k, v], axis=-1)
    lead, d = q.shape[:-1], args.head_dim
    hq, hkv = args.num_heads, args.num_kv_heads
    groups = [
        q.reshape(*lead, hkv, hq // hkv, d),
        k.reshape(*lead, hkv, 1, d),
        v.reshape(*lead, hkv, 1, d),
    ]
    return np.concatenate(groups, axis=-2).reshape(*lead, (hq + 2 * hkv) * d)


def _lane_order(head_dim: int, to_halves: bool) -> np.ndarray:
    """Column permutation within one head: interleaved -> halves (or back)."""
    halves = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    return halves if to_halves else np.argsort(halves)


def _permute_heads(x: np.ndarray, head_dim: int, order: np.ndarray) -> np.ndarray:
    heads = x.shape[-1] // head_dim
    return x.reshape(*x.shape[:-1], heads, head_dim)[..., order].reshape(x.shape)


def relayout(
    flat: dict[tuple[str, ...], Any],
    args: Any,
    *,
    source_layout: str,
    target_layout: str,
    lanes_to_halves: bool | None,
) -> dict[tuple[str, ...], Any]:
    """`flat` with every layer's q/k/v moved from `source_layout` to `target_layout`, and the q/k
    lanes moved interleaved -> halves (True), halves -> interleaved (False) or left (None).

    Entries that need no change are passed through untouched (not even read).
    """
    if source_layout == target_layout and lanes_to_halves is None:
        return flat
    out = dict(flat)
    order = None if lanes_to_halves is None else _lane_order(args.head_dim, lanes_to_halves)
    for layer in _layer_prefixes(flat):
        for leaf in ("kernel", "bias"):
            fused_path = (layer, "attention", "wqkv", leaf)
            paths = [(layer, "attention", name, leaf) for name in _SEPARATE]
            if source_layout == QKV_SEPARATE:
                if paths[0] not in out:
                    continue
                q, k, v = (np.asarray(out.pop(p)) for p in paths)
            else:
                if fused_path not in out:
                    continue
                q, k, v = _split_fused(np.asarray(out.pop(fused_path)), args, source_layout)
            if order is not None:
                q, k = _permute_heads(q, args.head_dim, order), _permute_heads(k, args.head_dim, order)
            if target_layout == QKV_SEPARATE:
                out.update(zip(paths, (q, k, v)))
            else:
                out[fused_path] = _fuse(q, k, v, args, target_layout)
        if order is not None:
            for norm in ("q_norm", "k_norm"):
                path = (layer, "attention", norm, "scale")
                if path in out:
                    out[path] = np.asarray(out[path])[..., order]
    return out


def _expert_leaf(leaf: Any, e: int) -> Any:
    """Expert `e` of a stacked [E, ...] array, or one expert's shape for an abstract leaf."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(tuple(leaf.shape[1:]), leaf.dtype)
    return leaf[e]


def split_experts(flat: dict[tuple[str, ...], Any], args: Any) -> dict[tuple[str, ...], Any]:
    """`flat` with every MoE layer's stacked expert arrays (layers_i, feed_forward, w1) [E, H, I]
    cut into E entries (layers_i, feed_forward, expert_<e>, w1, kernel) [H, I] (views; abstract
    leaves (ShapeDtypeStruct) become the shape of one expert). Unchanged for a dense model."""
    if getattr(args, "moe", None) is None:
        return flat
    out = dict(flat)
    for layer in _layer_prefixes(flat):
        for name in EXPERT_WEIGHT_NAMES:
            path = (layer, "feed_forward", name)
            if path not in out:
                continue
            stacked = out.pop(path)
            for e in range(args.moe.num_experts):
                out[(layer, "feed_forward", EXPERT.format(e=e), name, "kernel")] = _expert_leaf(stacked, e)
    return out


def stack_experts(flat: dict[tuple[str, ...], Any], args: Any) -> dict[tuple[str, ...], Any]:
    """The inverse of `split_experts`: per-expert kernels stacked into [E, ...] arrays."""
    if getattr(args, "moe", None) is None:
        return flat
    out = dict(flat)
    for layer in _layer_prefixes(flat):
        for name in EXPERT_WEIGHT_NAMES:
            paths = [
                (layer, "feed_forward", EXPERT.format(e=e), name, "kernel")
                for e in range(args.moe.num_experts)
            ]
            if paths[0] not in out:
                continue
            out[(layer, "feed_forward", name)] = np.stack([np.asarray(out.pop(p)) for p in paths])
    return out


def to_hf(flat: dict, args: Any, hf_layout: str) -> dict:
    """Our unrolled params -> the HF class's q/k/v layout, lane order and one entry per expert."""
    return split_experts(_attention_to_hf(flat, args, hf_layout), args)


def from_hf(flat: dict, args: Any, hf_layout: str) -> dict:
    """Unrolled params read in the HF class's layout -> our model's layout and lane order."""
    return _attention_from_hf(stack_experts(flat, args), args, hf_layout)


def _attention_to_hf(flat: dict, args: Any, hf_layout: str) -> dict:
    return relayout(
        flat,
        args,
        source_layout=args.qkv_layout,
        target_layout=hf_layout,
        lanes_to_halves=True if args.qk_interleaved else None,
    )


def _attention_from_hf(flat: dict, args: Any, hf_layout: str) -> dict:
    return relayout(
        flat,
        args,
        source_layout=hf_layout,
        target_layout=args.qkv_layout,
        lanes_to_halves=False if args.qk_interleaved else None,
    )
