"""Tiny models, random weights and an independent PyTorch InternLM2 forward for the HF tests."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

SIZES = dict(num_layers=2, hidden_size=48, num_attention_heads=6, vocab_size=101)
INTERMEDIATE = 80
TOKENIZERS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "tokenizers")


def tiny_cfg(model_type: str, kv_heads: int = 2, **model):
    """A Config of a 2-layer model with odd sizes (hidden 48, 6 heads, MLP 80, vocab 101)."""
    from internevo_jax.config import config_from_dict

    m = dict(
        SIZES,
        num_kv_attention_heads=kv_heads,
        mlp_ratio=INTERMEDIATE / 48,
        multiple_of=16,
        dtype="torch.float32",
        no_bias=model_type != "INTERNLM",
        use_flash_attn=False,
    )
    m.update(model)
    return config_from_dict({"model_type": model_type, "model": m}, "<tiny>", log=lambda *a: None)


def random_params(cfg, seed: int = 0) -> dict:
    """Random fp32 params with every term of the forward pass mattering (not InternEvo's tiny init)."""
    from internevo_jax.model import abstract_params, build_model

    shapes = abstract_params(build_model(cfg))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "scale":
            value = 1.0 + rng.normal(0, 0.2, leaf.shape)
        elif name == "embedding":
            value = rng.normal(0, 1.0, leaf.shape)
        elif name == "bias":
            value = rng.normal(0, 0.2, leaf.shape)
        else:
            value = rng.normal(0, 1.0 / np.sqrt(leaf.shape[-2]), leaf.shape)
        return np.asarray(value, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def logits_of(cfg, params, tokens) -> np.ndarray:
    from internevo_jax.model import build_model

    model = build_model(cfg)
    return np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(tokens, jnp.int32)))


def random_tokens(seed: int = 0, batch: int = 2, length: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SIZES["vocab_size"], (batch, length))


def save_random_llama(folder: str, *, bias: bool, kv_heads: int, seed: int = 0, **config) -> None:
    """A random transformers LlamaForCausalLM saved as sharded safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(
        vocab_size=SIZES["vocab_size"],
        hidden_size=48,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=kv_heads,
        attention_bias=bias,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        **config,
    )
    model = LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # HF's init (std 0.02, unit norms, zero biases) would hide mapping mistakes
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else torch.randn_like(p) * 0.3)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")


def llama_logits(folder: str, tokens: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


# ---------------------------------------------------------------- InternLM2 reference (PyTorch)


def load_state(folder: str) -> dict:
    """{name: torch tensor} of an HF folder (index + shards)."""
    from safetensors.torch import load_file

    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index):
        return load_file(os.path.join(folder, "model.safetensors"))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for name in files:
        state.update(load_file(os.path.join(folder, name)))
    return state


def internlm2_reference_logits(folder: str, tokens: np.ndarray) -> np.ndarray:
    """InternLM2ForCausalLM's forward, written from its published description, in float64.

    wqkv rows are grouped per kv head: [q_0 .. q_{G-1}, k, v] blocks of head_dim rows each.
    """
    import torch

    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    s = {k: v.double() for k, v in load_state(folder).items()}
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    d = c["hidden_size"] // heads
    groups = heads // kv_heads
    ids = torch.tensor(tokens)
    b, t = ids.shape

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]) * w

    base = float(c["rope_theta"])
    scaling = c.get("rope_scaling")
    if scaling and t > c["max_position_embeddings"]:
        f = scaling["factor"]
        base = base * ((f * t / c["max_position_embeddings"]) - (f - 1)) ** (d / (d - 2))
    inv = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)

    def rope(x):  # [b, h, t, d]
        return x * cos + torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1) * sin

    x = s["model.tok_embeddings.weight"][ids]
    mask = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, s[p + "attention_norm.weight"])
        qkv = h @ s[p + "attention.wqkv.weight"].T
        if c.get("bias"):
            qkv = qkv + s[p + "attention.wqkv.bias"]
        qkv = qkv.view(b, t, kv_heads, groups + 2, d)
        q = qkv[:, :, :, :groups].reshape(b, t, heads, d).transpose(1, 2)
        k = qkv[:, :, :, groups].transpose(1, 2).repeat_interleave(groups, dim=1)
        v = qkv[:, :, :, groups + 1].transpose(1, 2).repeat_interleave(groups, dim=1)
        scores = rope(q) @ rope(k).transpose(-1, -2) / d**0.5 + mask
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, heads * d) @ s[p + "attention.wo.weight"].T
        if c.get("bias"):
            o = o + s[p + "attention.wo.bias"]
        x = x + o
        h = rms(x, s[p + "ffn_norm.weight"])
        gate = torch.nn.functional.silu(h @ s[p + "feed_forward.w1.weight"].T)
        x = x + (gate * (h @ s[p + "feed_forward.w3.weight"].T)) @ s[p + "feed_forward.w2.weight"].T
    x = rms(x, s["model.norm.weight"])
    return (x @ s["output.weight"].T).numpy()


def save_random_internlm2(folder: str, *, kv_heads: int, bias: bool = False, seed: int = 0, **extra) -> None:
    """A random InternLM2 HF folder (config.json + sharded safetensors), written with torch only."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    heads, h, d = 6, 48, 8
    width = kv_heads * (heads // kv_heads + 2) * d
    shapes = {"model.tok_embeddings.weight": (101, h), "model.norm.weight": (h,), "output.weight": (101, h)}
    for i in range(2):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "attention_norm.weight": (h,),
                p + "ffn_norm.weight": (h,),
                p + "attention.wqkv.weight": (width, h),
                p + "attention.wo.weight": (h, h),
                p + "feed_forward.w1.weight": (INTERMEDIATE, h),
                p + "feed_forward.w3.weight": (INTERMEDIATE, h),
                p + "feed_forward.w2.weight": (h, INTERMEDIATE),
            }
        )
        if bias:
            shapes.update({p + "attention.wqkv.bias": (width,), p + "attention.wo.bias": (h,)})
    tensors = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=g)
        tensors[name] = (1.0 + 0.2 * noise) if name.endswith("norm.weight") else noise * 0.3
    os.makedirs(folder, exist_ok=True)
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for j, part in enumerate((names[:half], names[half:]), start=1):
        file_name = f"model-{j:05d}-of-00002.safetensors"
        save_file(
            {n: tensors[n].contiguous() for n in part}, os.path.join(folder, file_name), {"format": "pt"}
        )
        weight_map.update({n: file_name for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "bias": bias,
        "vocab_size": 101,
        "hidden_size": h,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        **extra,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_tool(name: str):
    """tools/<name>.py as a module (the tools folder is not a package), to call its main() in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
