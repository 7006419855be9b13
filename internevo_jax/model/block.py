"""The decoder layer shared by every dense model family: attention and the decoder block.

The families differ only in `ModelArgs` options: InternLM1 uses q/k/v/o biases; LLaMA2 separate
wq/wk/wv with grouped kv heads; InternLM2 one fused `wqkv` in its per-kv-group layout; Baichuan2
one fused wqkv of all q, then all k, then all v; Qwen2 biases on q/k/v only; Qwen3 per-head q/k
RMSNorm; Gemma a head_dim apart from hidden / heads.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.attention import choice_for_args
from internevo_jax.model.kv_cache import cached_attention, is_decoding
from internevo_jax.model.layers import (
    FeedForward,
    RMSNorm,
    apply_rotary,
    dense,
    make_norm,
    normal_init,
    out_proj_init,
    rope_tables,
    softmax_scale,
)
from internevo_jax.model.moe.layer import MoEFeedForward
from internevo_jax.names import ACT_EMBED, ACT_HEADS, EMBED, HEADS, KV_HEADS, QKV_GROUPED, QKV_SEPARATE


def split_grouped_qkv(qkv: jax.Array, num_heads: int, num_kv_heads: int, head_dim: int):
    """InternLM2's fused projection [B, T, Hkv*(G+2)*D] -> q [B, T, Hq, D], k, v [B, T, Hkv, D].

    Each kv group holds its G = Hq/Hkv query heads, then its key head, then its value head, so
    query head h reads kv head h // G (the same order as the separate-projection path).
    """
    b, t, _ = qkv.shape
    groups = num_heads // num_kv_heads
    grouped = qkv.reshape(b, t, num_kv_heads, groups + 2, head_dim)
    q = grouped[:, :, :, :groups].reshape(b, t, num_heads, head_dim)
    return q, grouped[:, :, :, groups], grouped[:, :, :, groups + 1]


def split_concat_qkv(qkv: jax.Array, num_heads: int, num_kv_heads: int, head_dim: int):
    """A fused [q | k | v] projection (Baichuan2's W_pack) [B, T, (Hq+2Hkv)*D] -> q, k, v heads."""
    b, t, _ = qkv.shape
    q_width, kv_width = num_heads * head_dim, num_kv_heads * head_dim
    q, k, v = jnp.split(qkv, [q_width, q_width + kv_width], axis=-1)
    return (
        q.reshape(b, t, num_heads, head_dim),
        k.reshape(b, t, num_kv_heads, head_dim),
        v.reshape(b, t, num_kv_heads, head_dim),
    )


def project_qkv(a: ModelArgs, x: jax.Array):
    """q [B, T, Hq, D], k and v [B, T, Hkv, D] before RoPE; call inside a compact module."""
    b, t, _ = x.shape
    if a.qkv_layout != QKV_SEPARATE:
        # Grouped: one kernel column block per kv group, so tensor-parallel splits of "heads" that
        # divide the kv head count keep whole groups together, as InternEvo's wqkv split does.
        init = normal_init(a.qkv_init_std, (EMBED, HEADS))
        width = (a.num_heads + 2 * a.num_kv_heads) * a.head_dim
        qkv = dense(a, width, init, use_bias=a.qkv_bias, bias_name=HEADS, name="wqkv")(x)
        split = split_grouped_qkv if a.qkv_layout == QKV_GROUPED else split_concat_qkv
        return split(qkv, a.num_heads, a.num_kv_heads, a.head_dim)
    q_init = normal_init(a.qkv_init_std, (EMBED, HEADS))
    kv_init = normal_init(a.qkv_init_std, (EMBED, KV_HEADS))
    kv_width = a.num_kv_heads * a.head_dim
    q = dense(a, a.num_heads * a.head_dim, q_init, use_bias=a.qkv_bias, bias_name=HEADS, name="wq")(x)
    k = dense(a, kv_width, kv_init, use_bias=a.qkv_bias, bias_name=KV_HEADS, name="wk")(x)
    v = dense(a, kv_width, kv_init, use_bias=a.qkv_bias, bias_name=KV_HEADS, name="wv")(x)
    return (
        q.reshape(b, t, a.num_heads, a.head_dim),
        k.reshape(b, t, a.num_kv_heads, a.head_dim),
        v.reshape(b, t, a.num_kv_heads, a.head_dim),
    )


def to_windows(x: jax.Array, window: int) -> jax.Array:
    """[B, T, H, D] -> [B * T / window, window, H, D]: every window a row of its own. Rows stay
    batch-major, so a batch sharding of B carries over to the windows without moving data."""
    b, t = x.shape[:2]
    return nn.with_logical_constraint(x.reshape(b * (t // window), window, *x.shape[2:]), ACT_HEADS)


def causal_attention(
    a: ModelArgs,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array | None,
) -> jax.Array:
    """RoPE, then causal (packed) attention on the chosen backend: [B, T, Hq, D] out (rows of
    fixed windows come out as [B * T / window, window, Hq, D])."""
    t = q.shape[1]
    cos, sin = rope_tables(a, positions)
    q = nn.with_logical_constraint(apply_rotary(q, cos, sin, a.qk_interleaved), ACT_HEADS)
    k = nn.with_logical_constraint(apply_rotary(k, cos, sin, a.qk_interleaved), ACT_HEADS)
    v = nn.with_logical_constraint(v, ACT_HEADS)

    # Only packed rows: segment_ids=None is one unpacked sequence per row.
    window = a.window_for(t) if segment_ids is not None else None
    if window is not None:
        q, k, v = to_windows(q, window), to_windows(k, window), to_windows(v, window)
        segment_ids = None
    choice = choice_for_args(a, seq_len=q.shape[1], has_segments=segment_ids is not None)
    return choice.fn(
        q,
        k,
        v,
        segment_ids,
        scale=softmax_scale(a.head_dim),
        precision=a.precision,
        sliding_window=a.sliding_window,
    )


class Attention(nn.Module):
    """Causal self-attention: wq/wk/wv (or a fused wqkv), optional q/k norms, wo, RoPE, pluggable
    backend; a sliding window when `args.sliding_window` is set (the args of this layer).

    Packed rows made of fixed windows (`args.window_for(T)`, e.g. data.pack_sample_into_one=True)
    run attention on the windows as rows of their own with a plain causal mask: the same maths as
    their segment ids, without a mask and with T / window times fewer scores.

    Applied with the "cache" collection mutable it runs in decode mode (model/kv_cache.py).
    """

    args: ModelArgs

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None,
        layer_idx: Any,
    ) -> jax.Array:
        a = self.args
        b, t, _ = x.shape
        q, k, v = project_qkv(a, x)
        if a.qk_norm:
            q = RMSNorm(a, features=a.head_dim, name="q_norm")(q)
            k = RMSNorm(a, features=a.head_dim, name="k_norm")(k)

        if is_decoding(self):
            out = cached_attention(self, a, q, k, v, positions, segment_ids)
        else:
            out = causal_attention(a, q, k, v, positions, segment_ids)
        out = nn.with_logical_constraint(out, ACT_HEADS).reshape(b, t, a.num_heads * a.head_dim)

        o_init = out_proj_init(a, a.out_init_std, layer_idx, (HEADS, EMBED))
        return dense(a, x.shape[-1], o_init, use_bias=a.out_bias, bias_name=EMBED, name="wo")(out)


class DecoderBlock(nn.Module):
    """One transformer layer.

    pre-norm (default): h = x + Attn(Norm(x)); out = h + MLP(Norm(h))
    post-norm (`args.post_norm`, InternEvo's apply_post_layer_norm for InternLM2):
        h = Norm(x + Attn(x)); out = Norm(h + MLP(h))

    `layer_idx` is a call argument, not an attribute, so that one block definition serves both
    the unrolled stack and nn.scan (where it is a traced scalar); it sets the depth-scaled init
    of wo and w2. With `scan_mode` the block returns (out, None) as nn.scan expects.
    """

    args: ModelArgs
    scan_mode: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None,
        layer_idx: Any,
    ):
        a = self.args
        attention = Attention(a, name="attention")
        if a.moe is None:
            feed_forward = FeedForward(a, name="feed_forward")
        else:
            moe_layer = MoEFeedForward(a, name="feed_forward")
            valid = None if segment_ids is None else segment_ids != 0
            feed_forward = lambda h, idx: moe_layer(h, idx, valid)  # noqa: E731
        attention_norm = make_norm(a, "attention_norm")
        ffn_norm = make_norm(a, "ffn_norm")
        if a.post_norm:
            h = attention_norm(x + attention(x, positions, segment_ids, layer_idx))
            h = nn.with_logical_constraint(h, ACT_EMBED)
            out = ffn_norm(h + feed_forward(h, layer_idx))
        else:
            h = x + attention(attention_norm(x), positions, segment_ids, layer_idx)
            h = nn.with_logical_constraint(h, ACT_EMBED)
            out = h + feed_forward(ffn_norm(h), layer_idx)
        out = nn.with_logical_constraint(out, ACT_EMBED)
        return (out, None) if self.scan_mode else out
