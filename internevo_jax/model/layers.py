"""Building blocks shared by the decoder models: norms, rotary embedding, gated MLP,
token embedding, output head, and InternEvo's initialisers.

Parameters are created in `param_dtype` (fp32 master weights) and carry logical axis names;
computation runs in `dtype` (the compute dtype).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.model.args import ModelArgs
from internevo_jax.names import ACT_MLP, EMBED, GELU, GELU_TANH, MLP, NORM, RMSNORM, SILU, VOCAB


def normal_init(std: float, names: tuple[str, ...]):
    """N(0, std) initialiser annotated with logical axis `names`."""
    return nn.with_logical_partitioning(nn.initializers.normal(stddev=std), names)


def scaled_normal_init(sigma: float, layer_idx: Any, names: tuple[str, ...]):
    """N(0, sigma / sqrt(2 * (layer_idx + 1))): InternEvo's depth-scaled init.

    `layer_idx` may be a traced scalar (inside a scan over layers), so the std is computed
    with jnp rather than math.
    """

    def init(key, shape, dtype=jnp.float32):
        std = sigma / jnp.sqrt(2.0 * (jnp.asarray(layer_idx, jnp.float32) + 1.0))
        return jax.random.normal(key, shape, dtype) * std.astype(dtype)

    return nn.with_logical_partitioning(init, names)


def out_proj_init(args: ModelArgs, std: float, layer_idx: Any, names: tuple[str, ...]):
    """Init of wo / w2, the projections that write into the residual stream.

    InternEvo shrinks them with depth (use_scaled_init) so the residual stream's variance
    does not grow with the number of layers.
    """
    if args.scaled_init:
        return scaled_normal_init(std, layer_idx, names)
    return normal_init(std, names)


def zeros_init(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros, names)


def ones_init(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones, names)


def scale_grad(x: jax.Array, scale: float) -> jax.Array:
    """Identity in the forward pass; multiplies the gradient by `scale` (GLM-130B trick).

    InternEvo writes this as `scale * x + (1 - scale) * x.detach()`; the form below has the same
    gradient but returns `x` bit-exactly instead of a rounded recombination.
    """
    if scale == 1:
        return x
    frozen = jax.lax.stop_gradient(x)
    return frozen + scale * (x - frozen)


def dense(
    args: ModelArgs,
    features: int,
    kernel_init,
    *,
    use_bias: bool,
    bias_name: str,
    name: str,
) -> nn.Dense:
    """A Dense layer in the model's dtypes; kernel (in, out) named by `kernel_init`, bias by `bias_name`."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=args.dtype,
        param_dtype=args.param_dtype,
        precision=args.precision,
        kernel_init=kernel_init,
        bias_init=zeros_init((bias_name,)),
        name=name,
    )


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w, statistics always in fp32.

    With `fp32_norm` the weight multiply also runs in fp32 (InternEvo's use_fp32_norm=True);
    otherwise the normalised value is cast to the compute dtype first and multiplied by the
    weight in that dtype, as InternEvo's RMSNorm does with low-precision weights. With
    `args.norm_unit_offset` (Gemma) the stored weight w starts at 0 and the scale is 1 + w.
    `features` overrides the normalised width (q/k norms normalise one head, not hidden).
    """

    args: ModelArgs
    features: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.args
        offset = a.norm_unit_offset
        init = zeros_init((NORM,)) if offset else ones_init((NORM,))
        scale = self.param("scale", init, (self.features or x.shape[-1],), a.param_dtype)
        xf = x.astype(jnp.float32)
        normed = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + a.norm_eps)
        if a.fp32_norm:
            w = scale.astype(jnp.float32)
            return (normed * (1.0 + w if offset else w)).astype(a.dtype)
        w = scale.astype(a.dtype)
        return normed.astype(a.dtype) * (1 + w if offset else w)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm semantics (biased variance, eps inside the sqrt), stats in fp32."""

    args: ModelArgs

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.args
        dim = x.shape[-1]
        scale = self.param("scale", ones_init((NORM,)), (dim,), a.param_dtype)
        bias = self.param("bias", zeros_init((NORM,)), (dim,), a.param_dtype)
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        normed = (xf - mean) * jax.lax.rsqrt(var + a.norm_eps)
        if a.fp32_norm:
            return (normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(a.dtype)
        return normed.astype(a.dtype) * scale.astype(a.dtype) + bias.astype(a.dtype)


def make_norm(args: ModelArgs, name: str | None = None) -> nn.Module:
    """The norm selected by `args.norm_type` (no `name` inside `setup`, which names by attribute)."""
    if args.norm_type == RMSNORM:
        return RMSNorm(args, name=name)
    if args.norm_unit_offset:
        raise ValueError(
            "model.add_unit_offset=True needs norm_type='rmsnorm' (it is RMSNorm's (1 + w) scale)"
        )
    return LayerNorm(args, name=name)


def dynamic_ntk_base(
    positions: jax.Array, head_dim: int, base: float, max_positions: int, factor: float = 1.0
) -> jax.Array:
    """Per-row RoPE base [B] of dynamic NTK scaling (InternEvo's DynamicNTKScalingRotaryEmbedding).

    The sequence length L of a row is its largest position + 1 (a packed row is one of
    InternEvo's packs; its `indexes` are our positions). Up to `max_positions` the base is
    unchanged; beyond, base * (factor * L / max_positions - (factor - 1)) ** (D / (D - 2)).
    InternEvo always passes factor 1.0.
    """
    length = jnp.max(positions, axis=-1).astype(jnp.float32) + 1.0
    grown = base * (factor * length / max_positions - (factor - 1.0)) ** (head_dim / (head_dim - 2))
    return jnp.where(length > max_positions, grown, jnp.float32(base))


def rotary_tables(
    positions: jax.Array, head_dim: int, base: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, head_dim // 2] in fp32 for integer `positions` [B, T].

    `base` is a number or a per-row array [B] (dynamic NTK).
    """
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    base = jnp.asarray(base, jnp.float32)
    inv_freq = 1.0 / (base[..., None, None] ** exponents)  # [1, 1, D/2] or [B, 1, D/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def rope_tables(args: ModelArgs, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The model's cos/sin tables for `positions`, with dynamic NTK scaling when enabled."""
    base = args.rope_base
    if args.dynamic_ntk:
        base = dynamic_ntk_base(
            positions, args.head_dim, args.rope_base, args.max_position_embeddings, args.rope_scaling_factor
        )
    return rotary_tables(positions, args.head_dim, base)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array, interleaved: bool = False) -> jax.Array:
    """RoPE over the full head dim of x [B, T, H, D], the maths in fp32.

    Rotate-half (GPT-NeoX / HF Llama) pairs lanes (i, i + D/2); `interleaved` (InternEvo's
    qk_interleaved=True, GPT-J / Meta order) pairs adjacent lanes (2i, 2i + 1). The two are the
    same model up to a fixed permutation of each head's q/k columns (hf/relayout.py).
    """
    xf = x.astype(jnp.float32)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = jnp.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(xf.shape)
    else:
        half = x.shape[-1] // 2
        x1, x2 = xf[..., :half], xf[..., half:]
        out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return out.astype(x.dtype)


ACTIVATIONS = {
    SILU: nn.silu,
    GELU: partial(nn.gelu, approximate=False),
    GELU_TANH: partial(nn.gelu, approximate=True),
}


class FeedForward(nn.Module):
    """Gated MLP without bias: w2(act(w1 x) * w3 x), act silu (SwiGLU) or gelu (GeGLU).

    w1 = gate_proj, w3 = up_proj, w2 = down_proj in HF terms (InternEvo's current naming).
    """

    args: ModelArgs

    @nn.compact
    def __call__(self, x: jax.Array, layer_idx: Any) -> jax.Array:
        a = self.args
        hidden = a.mlp_hidden_size
        up_init = normal_init(a.ffn_up_init_std, (EMBED, MLP))
        gate = dense(a, hidden, up_init, use_bias=False, bias_name=MLP, name="w1")(x)
        up = dense(a, hidden, up_init, use_bias=False, bias_name=MLP, name="w3")(x)
        h = nn.with_logical_constraint(ACTIVATIONS[a.mlp_activation](gate) * up, ACT_MLP)
        down_init = out_proj_init(a, a.ffn_down_init_std, layer_idx, (MLP, EMBED))
        return dense(a, x.shape[-1], down_init, use_bias=False, bias_name=EMBED, name="w2")(h)


class Embedding(nn.Module):
    """Token embedding [vocab, hidden]; the lookup runs on fp32 rows, then casts to the
    residual dtype, then (Gemma, `args.embed_scale`) multiplies by sqrt(hidden) in that dtype.

    Gathering before the cast avoids converting the whole table to the compute dtype each step.
    `attend(x)` is the tied output projection (x @ table.T).
    """

    args: ModelArgs

    def setup(self):
        a = self.args
        self.embedding = self.param(
            "embedding",
            normal_init(a.embed_init_std, (VOCAB, EMBED)),
            (a.vocab_size, a.hidden_size),
            a.param_dtype,
        )

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        a = self.args
        # mode="fill": an id outside the vocabulary gives NaN rows instead of a silently clipped id.
        x = jnp.take(self.embedding, input_ids, axis=0, mode="fill").astype(a.residual_dtype)
        if a.embed_scale:
            # HF's Gemma rounds the normaliser to the activations' dtype first; so does this.
            x = x * jnp.asarray(math.sqrt(a.hidden_size), x.dtype)
        return x

    def head_weight(self) -> jax.Array:
        """The table as a tied head kernel [hidden, vocab] in the compute dtype."""
        return self.embedding.T.astype(self.args.dtype)


class Head(nn.Module):
    """Untied output projection (hidden -> vocab, no bias), kernel layout (in, out).

    InternEvo's head (ScaleColumnParallelLinear, weight_scale=embed_grad_scale) scales the
    gradient of its weight by embed_grad_scale as well; the forward value is unchanged. With
    `args.norm_head` (Baichuan2's NormHead) every vocab column is divided by its L2 norm first.
    `weight()` is the kernel as the projection uses it (compute dtype, gradient scaled).
    """

    args: ModelArgs

    def setup(self):
        a = self.args
        self.kernel = self.param(
            "kernel",
            normal_init(a.head_init_std, (EMBED, VOCAB)),
            (a.hidden_size, a.vocab_size),
            a.param_dtype,
        )

    def weight(self) -> jax.Array:
        """The kernel [hidden, vocab] in the compute dtype, its gradient scaled by embed_grad_scale."""
        a = self.args
        kernel = scale_grad(self.kernel, a.embed_grad_scale)
        if a.norm_head:
            # torch.nn.functional.normalize: w / max(||w||, 1e-12), in fp32 before the cast.
            norm = jnp.sqrt(jnp.sum(jnp.square(kernel.astype(jnp.float32)), axis=0, keepdims=True))
            kernel = kernel / jnp.maximum(norm, 1e-12)
        return kernel.astype(a.dtype)


def softmax_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
