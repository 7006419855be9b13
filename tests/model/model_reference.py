"""An independent float64 NumPy forward pass of the decoder models (InternLM, InternLM2, LLaMA2).

Written from InternEvo's description, not from the model code: loops over heads, explicit
index arithmetic for InternLM2's fused wqkv, HF's rotate-half RoPE, InternEvo's dynamic NTK
formula.
"""

from __future__ import annotations

import jax
import numpy as np


def ref_rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def ref_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def ref_ntk_base(positions, head_dim, base, max_positions):
    """InternEvo's dynamic NTK base per row (scaling factor 1): grows once max position + 1 > max_positions."""
    out = []
    for row in np.asarray(positions):
        length = float(row.max()) + 1.0
        out.append(
            base * (length / max_positions) ** (head_dim / (head_dim - 2)) if length > max_positions else base
        )
    return np.asarray(out, np.float64)


def ref_rope(x, positions, base):
    """HF Llama formulation: x * cos + rotate_half(x) * sin; `base` is a number or one per row."""
    d = x.shape[-1]
    bases = np.broadcast_to(np.asarray(base, np.float64), (x.shape[0],))
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        inv_freq = 1.0 / bases[b] ** (np.arange(0, d, 2, dtype=np.float64) / d)
        freqs = positions[b][:, None].astype(np.float64) * inv_freq  # [T, D/2]
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]  # [T, 1, D]
        rotated = np.concatenate([-x[b, ..., d // 2 :], x[b, ..., : d // 2]], axis=-1)
        out[b] = x[b] * np.cos(emb) + rotated * np.sin(emb)
    return out


def ref_attention(q, k, v, segments):
    """Loop over batch and heads; kv head for query head h is h // (Hq // Hkv)."""
    b, t, hq, d = q.shape
    groups = hq // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for h in range(hq):
            kv = h // groups
            scores = q[bi, :, h] @ k[bi, :, kv].T / np.sqrt(d)
            for i in range(t):
                for j in range(t):
                    visible = j <= i and (segments is None or segments[bi, i] == segments[bi, j])
                    if not visible:
                        scores[i, j] = -np.inf
            scores = scores - scores.max(-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(-1, keepdims=True)
            out[bi, :, h] = p @ v[bi, :, kv]
    return out


def ref_split_wqkv(y, num_heads, num_kv_heads, head_dim):
    """InternEvo's "(h gs d) -> h gs d" split of the fused projection output, by index arithmetic.

    Output column c = (g * (G + 2) + s) * D + i: kv group g, slot s (0..G-1 query heads of the
    group, G the key, G + 1 the value), lane i.
    """
    groups = num_heads // num_kv_heads
    b, t, _ = y.shape
    q = np.zeros((b, t, num_heads, head_dim))
    k = np.zeros((b, t, num_kv_heads, head_dim))
    v = np.zeros((b, t, num_kv_heads, head_dim))
    for g in range(num_kv_heads):
        for s in range(groups + 2):
            cols = y[..., (g * (groups + 2) + s) * head_dim : (g * (groups + 2) + s + 1) * head_dim]
            if s < groups:
                q[:, :, g * groups + s] = cols
            elif s == groups:
                k[:, :, g] = cols
            else:
                v[:, :, g] = cols
    return q, k, v


def ref_forward(params, ids, positions, segments, args):
    """Logits in float64 for `args` (a ModelArgs) and an unrolled params tree."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

    def norm(x, n):
        if args.norm_type == "rmsnorm":
            return ref_rmsnorm(x, n["scale"], args.norm_eps)
        return ref_layernorm(x, n["scale"], n["bias"], args.norm_eps)

    def linear(x, layer):
        y = x @ layer["kernel"]
        return y + layer["bias"] if "bias" in layer else y

    positions = np.asarray(positions)
    base = args.rope_base
    if args.dynamic_ntk:
        base = ref_ntk_base(positions, args.head_dim, args.rope_base, args.max_position_embeddings)

    def attention(x, a):
        bsz, t, _ = x.shape
        if "wqkv" in a:
            q, k, v = ref_split_wqkv(linear(x, a["wqkv"]), args.num_heads, args.num_kv_heads, args.head_dim)
        else:
            q = linear(x, a["wq"]).reshape(bsz, t, args.num_heads, args.head_dim)
            k = linear(x, a["wk"]).reshape(bsz, t, args.num_kv_heads, args.head_dim)
            v = linear(x, a["wv"]).reshape(bsz, t, args.num_kv_heads, args.head_dim)
        q, k = ref_rope(q, positions, base), ref_rope(k, positions, base)
        o = ref_attention(q, k, v, segments).reshape(bsz, t, -1)
        return linear(o, a["wo"])

    def mlp(x, f):
        gate = x @ f["w1"]["kernel"]
        silu = gate / (1.0 + np.exp(-gate))
        return (silu * (x @ f["w3"]["kernel"])) @ f["w2"]["kernel"]

    x = p["embedding"]["embedding"][np.asarray(ids)]
    segments = None if segments is None else np.asarray(segments)
    for i in range(args.num_layers):
        lp = p[f"layers_{i}"]
        if args.post_norm:
            h = norm(x + attention(x, lp["attention"]), lp["attention_norm"])
            x = norm(h + mlp(h, lp["feed_forward"]), lp["ffn_norm"])
        else:
            h = x + attention(norm(x, lp["attention_norm"]), lp["attention"])
            x = h + mlp(norm(h, lp["ffn_norm"]), lp["feed_forward"])
    if args.final_norm:
        x = norm(x, p["norm"])
    return x @ p["head"]["kernel"]
