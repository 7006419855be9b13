"""A hand-written JAX train step of the InternLM model: the plain reference our trainer is timed against.

    import plain_step                                  # benchmarks/ on sys.path
    params = plain_step.init_params(cfg, jax.random.key(0))
    opt_state = plain_step.make_optimizer(cfg).init(params)
    step = plain_step.make_step(cfg)
    params, opt_state, loss = step(params, opt_state, plain_step.make_batch(cfg, jax.random.key(1)))

No framework code: plain jnp functions over a dict of arrays. The model is model_type "INTERNLM"
(design notes §5): pre-norm decoder, RMSNorm with fp32 statistics and weight, q/k/v/o projections
with bias, rotate-half RoPE, SwiGLU w2(silu(w1 x) * w3 x) without bias, final RMSNorm, untied head.
One parameter set per layer (an unrolled Python loop), fp32 master parameters whose matrices are
cast to the compute dtype for the forward, causal attention per row (`jax.nn.dot_product_attention`,
backend chosen by jax), token-mean cross-entropy over labels != -100, gradient accumulation by
`lax.scan` over micro-batches, optax AdamW (the config's lr, betas, eps, weight decay) after
global-norm clipping. Every size and hyper-parameter is read from the typed Config, so the plain
model and ours always match; `from_ours` maps our initialised parameters onto this layout.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

IGNORE_INDEX = -100
# InternEvo's InternLM1 init: embedding and head N(0, 0.0052); q/k/v, w1, w3 N(0, 0.006);
# wo and w2 N(0, 0.006 / sqrt(2 * (layer + 1))); biases 0; norm weights 1.
EMBED_STD = 0.0052
PROJ_STD = 0.006


def dims(cfg: Any) -> dict:
    """The model's sizes from `cfg` (a Config of model_type "INTERNLM" without grouped kv heads)."""
    m = cfg.model
    if cfg.model_type.upper() != "INTERNLM":
        raise ValueError(
            f"the plain step is the INTERNLM model; the config has model_type {cfg.model_type!r}"
        )
    heads = int(m.num_attention_heads)
    if int(m.num_kv_attention_heads or heads) != heads:
        raise ValueError(
            "the plain step has no grouped kv heads (num_kv_attention_heads != num_attention_heads)"
        )
    return dict(
        hidden=int(m.hidden_size),
        heads=heads,
        head_dim=int(m.head_dim),
        layers=int(m.num_layers),
        mlp=int(m.mlp_hidden_size),
        vocab=int(m.vocab_size),
        eps=float(m.layer_norm_epsilon),
        rope_base=float(m.rope_base),
        dtype=m.compute_dtype,
    )


def init_params(cfg: Any, key: jax.Array) -> dict:
    """fp32 parameters: {embedding, layers: [one dict per layer], norm, head}; kernels are (in, out)."""
    d = dims(cfg)
    h, width, mlp, vocab = d["hidden"], d["heads"] * d["head_dim"], d["mlp"], d["vocab"]
    keys = iter(jax.random.split(key, 2 + 7 * d["layers"]))

    def normal(shape, std):
        return std * jax.random.normal(next(keys), shape, jnp.float32)

    ones, zeros = (lambda n: jnp.ones((n,), jnp.float32)), (lambda n: jnp.zeros((n,), jnp.float32))
    layers = []
    for i in range(d["layers"]):
        out_std = PROJ_STD / math.sqrt(2 * (i + 1))
        layers.append(
            dict(
                attention_norm=ones(h),
                wq=normal((h, width), PROJ_STD),
                bq=zeros(width),
                wk=normal((h, width), PROJ_STD),
                bk=zeros(width),
                wv=normal((h, width), PROJ_STD),
                bv=zeros(width),
                wo=normal((width, h), out_std),
                bo=zeros(h),
                ffn_norm=ones(h),
                w1=normal((h, mlp), PROJ_STD),
                w3=normal((h, mlp), PROJ_STD),
                w2=normal((mlp, h), out_std),
            )
        )
    return dict(
        embedding=normal((vocab, h), EMBED_STD),
        layers=layers,
        norm=ones(h),
        head=normal((h, vocab), EMBED_STD),
    )


def from_ours(params: dict) -> dict:
    """Our unrolled InternLM parameter tree (layers_0 .. layers_{L-1}, boxed or not) in the plain layout."""

    def value(x):
        return x.unbox() if hasattr(x, "unbox") else x

    p = params.get("params", params)
    if "layers" in p:
        raise ValueError("from_ours takes unrolled parameters (model.scan_layers=False)")
    layers = []
    for i in range(sum(1 for k in p if k.startswith("layers_"))):
        block = p[f"layers_{i}"]
        att, ffn = block["attention"], block["feed_forward"]
        layers.append(
            dict(
                attention_norm=value(block["attention_norm"]["scale"]),
                **{f"w{n}": value(att[f"w{n}"]["kernel"]) for n in "qkvo"},
                **{f"b{n}": value(att[f"w{n}"]["bias"]) for n in "qkvo"},
                ffn_norm=value(block["ffn_norm"]["scale"]),
                **{n: value(ffn[n]["kernel"]) for n in ("w1", "w2", "w3")},
            )
        )
    return dict(
        embedding=value(p["embedding"]["embedding"]),
        layers=layers,
        norm=value(p["norm"]["scale"]),
        head=value(p["head"]["kernel"]),
    )


def param_count(params: dict) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, dtype) -> jax.Array:
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return (normed * weight.astype(jnp.float32)).astype(dtype)


def rope_tables(seq_len: int, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin [T, head_dim / 2] in fp32 for positions 0 .. T-1."""
    inv_freq = 1.0 / base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def rotate_half(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """RoPE on x [B, T, H, D]: pairs (i, i + D/2), in fp32."""
    half = x.shape[-1] // 2
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def layer(p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array, d: dict) -> jax.Array:
    b, t, _ = x.shape
    dt = d["dtype"]

    def proj(a, w, bias):
        return a @ w + bias.astype(dt)

    a = rms_norm(x, p["attention_norm"], d["eps"], dt)
    q, k, v = (proj(a, p[f"w{n}"], p[f"b{n}"]).reshape(b, t, d["heads"], d["head_dim"]) for n in "qkv")
    q, k = rotate_half(q, cos, sin), rotate_half(k, cos, sin)
    out = jax.nn.dot_product_attention(q, k, v, scale=d["head_dim"] ** -0.5, is_causal=True)
    h = x + proj(out.reshape(b, t, -1), p["wo"], p["bo"])
    f = rms_norm(h, p["ffn_norm"], d["eps"], dt)
    return h + (jax.nn.silu(f @ p["w1"]) * (f @ p["w3"])) @ p["w2"]


def forward(params: dict, input_ids: jax.Array, cfg: Any) -> jax.Array:
    """Logits [B, T, vocab] in the compute dtype for rows input_ids [B, T] (one sequence per row)."""
    d = dims(cfg)
    # The matrices (embedding included) compute in the compute dtype; norm weights and biases stay fp32.
    p = jax.tree.map(lambda w: w.astype(d["dtype"]) if w.ndim > 1 else w, params)
    cos, sin = rope_tables(input_ids.shape[1], d["head_dim"], d["rope_base"])
    x = jnp.take(p["embedding"], input_ids, axis=0)
    for block in p["layers"]:
        x = layer(block, x, cos, sin, d)
    return rms_norm(x, p["norm"], d["eps"], d["dtype"]) @ p["head"]


def loss_fn(params: dict, batch: dict, cfg: Any) -> jax.Array:
    """Token-mean cross-entropy (fp32) of one micro-batch {input_ids, labels} [rows, T]."""
    logits = forward(params, batch["input_ids"], cfg).astype(jnp.float32)
    labels = batch["labels"]
    valid = labels != IGNORE_INDEX
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, logz - picked, 0.0)
    return nll.sum() / jnp.maximum(valid.sum(), 1)


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """Global-norm clipping to hybrid_zero_optimizer.clip_grad_norm, then AdamW at the config's lr."""
    a, clip = cfg.adam, float(cfg.hybrid_zero_optimizer.clip_grad_norm)
    adamw = optax.adamw(a.lr, b1=a.adam_beta1, b2=a.adam_beta2, eps=a.adam_eps, weight_decay=a.weight_decay)
    return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip > 0 else adamw


def make_step(cfg: Any):
    """`step(params, opt_state, batch) -> (params, opt_state, loss)`, jitted (params and opt_state donated).

    batch: {input_ids, labels} int32, [rows, T] for one micro-batch or [micro_num, rows, T] for
    gradient accumulation (the mean of the micro-batches' gradients; loss = their mean loss).
    """
    tx = make_optimizer(cfg)
    loss_and_grad = jax.value_and_grad(lambda p, b: loss_fn(p, b, cfg))

    def grads_of(params, batch):
        if batch["input_ids"].ndim == 2:
            return loss_and_grad(params, batch)

        def accumulate(acc, micro):
            loss, g = loss_and_grad(params, micro)
            return jax.tree.map(jnp.add, acc, g), loss

        total, losses = jax.lax.scan(accumulate, jax.tree.map(jnp.zeros_like, params), batch)
        n = losses.shape[0]
        return losses.mean(), jax.tree.map(lambda g: g / n, total)

    def step(params, opt_state, batch):
        loss, grads = grads_of(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1))
    precision = cfg.model.matmul_precision  # what ours computes fp32 matmuls at ("highest" for fp32)

    def run(params, opt_state, batch):
        if precision is None:
            return jitted(params, opt_state, batch)
        with jax.default_matmul_precision(precision):
            return jitted(params, opt_state, batch)

    run.jitted = jitted
    return run


def make_batch(cfg: Any, key: jax.Array, *, rows: int | None = None, micro_num: int | None = None) -> dict:
    """Random rows of data.seq_len tokens with next-token labels (the last label ignored):
    [rows, T] when micro_num is 1, else [micro_num, rows, T]; defaults data.micro_bsz and data.micro_num."""
    rows = int(cfg.data.micro_bsz if rows is None else rows)
    micro_num = int(cfg.data.micro_num if micro_num is None else micro_num)
    shape = (rows, int(cfg.data.seq_len)) if micro_num == 1 else (micro_num, rows, int(cfg.data.seq_len))
    ids = jax.random.randint(key, shape, 0, int(cfg.model.vocab_size), jnp.int32)
    labels = jnp.concatenate([ids[..., 1:], jnp.full(shape[:-1] + (1,), IGNORE_INDEX, jnp.int32)], axis=-1)
    return {"input_ids": ids, "labels": labels}
