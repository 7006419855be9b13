"""Tiny random transformers models of the dense families (Qwen2, Qwen3, Gemma, LLaMA), packed rows,
and a float64 Baichuan2 forward written from its published architecture, for the family tests."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from hf_helpers import INTERMEDIATE, SIZES, load_state

HEAD_DIM = 16  # apart from hidden / heads (48 / 6 = 8): the head_dim path of Gemma and Qwen3
SEGMENTS = (5, 7)  # one packed row of two samples


def hf_classes(kind: str):
    import transformers as t

    return {
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM),
        "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM),
        "gemma": (t.GemmaConfig, t.GemmaForCausalLM),
        "llama": (t.LlamaConfig, t.LlamaForCausalLM),
    }[kind]


def save_random_hf(folder: str, kind: str, *, seed: int = 0, num_layers: int = 2, **config) -> None:
    """A random transformers model of `kind` (random weights, not HF's init) saved as shards."""
    import torch

    config_cls, model_cls = hf_classes(kind)
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=SIZES["vocab_size"],
        hidden_size=48,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=num_layers,
        num_attention_heads=6,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        rope_theta=10000.0,
        attn_implementation="eager",
    )
    fields.update(config)
    model = model_cls(config_cls(**fields)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                # Gemma stores w of its (1 + w) norm: small noise around 0 there, around 1 elsewhere.
                p.copy_((0.0 if kind == "gemma" else 1.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")


def hf_logits(folder: str, tokens: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] of the transformers model in `folder` (fp32, eager attention)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


def packed_row(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [1, T], positions [1, T], segment_ids [1, T]) of one row packing SEGMENTS."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SIZES["vocab_size"], (1, sum(SEGMENTS)))
    positions = np.concatenate([np.arange(n) for n in SEGMENTS])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(SEGMENTS)])[None]
    return tokens, positions, segments


def segment_slices():
    start = 0
    for n in SEGMENTS:
        yield slice(start, start + n)
        start += n


def packed_logits(cfg, params, tokens, positions, segments) -> np.ndarray:
    from internevo_jax.model import build_model

    model = build_model(cfg)
    fn = jax.jit(model.apply)
    as_ids = lambda x: jnp.asarray(x, jnp.int32)
    return np.asarray(fn({"params": params}, as_ids(tokens), as_ids(positions), as_ids(segments)))


def packed_diff(cfg, params, folder: str, seed: int = 1, reference=None) -> float:
    """Max |ours - reference| over a packed row, the reference run on each sample alone."""
    tokens, positions, segments = packed_row(seed)
    ours = packed_logits(cfg, params, tokens, positions, segments)
    reference = reference or hf_logits
    return max(float(np.abs(ours[:, s] - reference(folder, tokens[:, s])).max()) for s in segment_slices())


def patch_config(folder: str, **fields) -> None:
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(fields)
    for key in [k for k, v in fields.items() if v is None]:
        config.pop(key)
    with open(path, "w") as f:
        json.dump(config, f)


def baichuan2_reference_logits(folder: str, tokens: np.ndarray) -> np.ndarray:
    """BaichuanForCausalLM (Baichuan2-7B) in float64 from its published description: W_pack rows
    are [q; k; v]; rotate-half RoPE; SwiGLU MLP; the NormHead divides each lm_head row by its L2
    norm. Multi-head attention (Baichuan2 has no kv grouping)."""
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    s = {k: v.double().numpy() for k, v in load_state(folder).items()}
    heads, hidden = c["num_attention_heads"], c["hidden_size"]
    d = hidden // heads
    t = tokens.shape[1]

    def rms(x, w):
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + c["rms_norm_eps"]) * w

    inv = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * inv[None]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)

    def rope(x):  # [b, h, t, d]
        return x * cos + np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1) * sin

    def heads_of(x):
        return x.reshape(*x.shape[:2], heads, d).transpose(0, 2, 1, 3)

    x = s["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, s[p + "input_layernorm.weight"])
        q, k, v = np.split(h @ s[p + "self_attn.W_pack.weight"].T, 3, axis=-1)
        q, k, v = rope(heads_of(q)), rope(heads_of(k)), heads_of(v)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(*x.shape[:2], hidden)
        x = x + o @ s[p + "self_attn.o_proj.weight"].T
        h = rms(x, s[p + "post_attention_layernorm.weight"])
        gate = h @ s[p + "mlp.gate_proj.weight"].T
        x = (
            x
            + (gate / (1 + np.exp(-gate)) * (h @ s[p + "mlp.up_proj.weight"].T))
            @ s[p + "mlp.down_proj.weight"].T
        )
    x = rms(x, s["model.norm.weight"])
    head = s["lm_head.weight"]
    return x @ (head / np.linalg.norm(head, axis=1, keepdims=True)).T


def save_random_baichuan2(folder: str, seed: int = 0) -> None:
    """A random Baichuan2 HF folder (config.json + sharded safetensors), written with torch only."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    h, v = 48, SIZES["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(2):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.W_pack.weight": (3 * h, h),
                p + "self_attn.o_proj.weight": (h, h),
                p + "mlp.gate_proj.weight": (INTERMEDIATE, h),
                p + "mlp.up_proj.weight": (INTERMEDIATE, h),
                p + "mlp.down_proj.weight": (h, INTERMEDIATE),
            }
        )
    tensors = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=g)
        tensors[name] = (1.0 + 0.2 * noise) if name.endswith("norm.weight") else noise * 0.3
    os.makedirs(folder, exist_ok=True)
    save_file({n: t.contiguous() for n, t in tensors.items()}, os.path.join(folder, "model.safetensors"))
    config = {
        "architectures": ["BaichuanForCausalLM"],
        "model_type": "baichuan",
        "vocab_size": v,
        "hidden_size": h,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "model_max_length": 64,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
