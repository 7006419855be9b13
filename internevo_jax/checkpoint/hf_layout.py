"""Parameter names: our (unrolled) params tree <-> the Hugging Face state dict of each model family.

Kernels are (in, out) here and (out, in) in torch's Linear, so every 2-D projection is
transposed on the way; embeddings and norm weights are copied as they are. InternLM2's fused
`wqkv` has the same per-kv-group column order on both sides (HF's InternLM2 reads it with the
"(h gs d)" split InternEvo uses), so it is only transposed.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError

# Our model family -> the HF architecture its export loads as.
HF_ARCHITECTURES = {
    "INTERNLM": "LlamaForCausalLM",
    "LLAMA2": "LlamaForCausalLM",
    "INTERNLM2": "InternLM2ForCausalLM",
}

_LAYER = re.compile(r"^layers_(\d+)$")

# (module path below layers_i) -> HF name below model.layers.{i}.
_LLAMA_LAYER = {
    ("attention_norm", "scale"): "input_layernorm.weight",
    ("ffn_norm", "scale"): "post_attention_layernorm.weight",
    ("attention", "wq"): "self_attn.q_proj",
    ("attention", "wk"): "self_attn.k_proj",
    ("attention", "wv"): "self_attn.v_proj",
    ("attention", "wo"): "self_attn.o_proj",
    # InternEvo's w1/w3/w2 are SwiGLU's gate/up/down (its own converter once swapped w2 and w3).
    ("feed_forward", "w1"): "mlp.gate_proj",
    ("feed_forward", "w3"): "mlp.up_proj",
    ("feed_forward", "w2"): "mlp.down_proj",
}
_INTERNLM2_LAYER = {
    ("attention_norm", "scale"): "attention_norm.weight",
    ("ffn_norm", "scale"): "ffn_norm.weight",
    ("attention", "wqkv"): "attention.wqkv",
    ("attention", "wo"): "attention.wo",
    ("feed_forward", "w1"): "feed_forward.w1",
    ("feed_forward", "w3"): "feed_forward.w3",
    ("feed_forward", "w2"): "feed_forward.w2",
}
_TOP = {
    "llama": {
        ("embedding", "embedding"): "model.embed_tokens.weight",
        ("norm", "scale"): "model.norm.weight",
        ("head", "kernel"): "lm_head.weight",
    },
    "internlm2": {
        ("embedding", "embedding"): "model.tok_embeddings.weight",
        ("norm", "scale"): "model.norm.weight",
        ("head", "kernel"): "output.weight",
    },
}


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One parameter: its path in our unrolled tree, its HF name, and whether it is transposed."""

    ours: tuple[str, ...]
    hf: str
    transpose: bool

    @property
    def dotted(self) -> str:
        return ".".join(self.ours)

    def to_hf(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array.T) if self.transpose else array

    def from_hf(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array.T) if self.transpose else array

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(reversed(shape)) if self.transpose else tuple(shape)


def hf_style(family: str) -> str:
    if family not in HF_ARCHITECTURES:
        raise CheckpointError(
            f"model_type family {family!r} has no Hugging Face layout; HF conversion supports "
            f"{', '.join(sorted(HF_ARCHITECTURES))}."
        )
    return "internlm2" if family == "INTERNLM2" else "llama"


def tensor_map(family: str, path: tuple[str, ...]) -> TensorMap:
    """The HF name of the parameter at `path` of an unrolled tree; CheckpointError when it has none."""
    style = hf_style(family)
    if path in _TOP[style]:
        return TensorMap(path, _TOP[style][path], transpose=path[-1] == "kernel")
    match = _LAYER.match(path[0]) if path else None
    table = _INTERNLM2_LAYER if style == "internlm2" else _LLAMA_LAYER
    if match and len(path) >= 3:
        prefix = f"model.layers.{int(match.group(1))}."
        if path[1:] in table:  # norm weights
            return TensorMap(path, prefix + table[path[1:]], transpose=False)
        if path[1:3] in table and len(path) == 4 and path[3] in ("kernel", "bias"):
            suffix = "weight" if path[3] == "kernel" else "bias"
            return TensorMap(path, f"{prefix}{table[path[1:3]]}.{suffix}", transpose=path[3] == "kernel")
    hint = (
        " LayerNorm biases have no place in HF's LLaMA/InternLM2 (they use RMSNorm): export needs "
        "norm_type='rmsnorm'."
        if path and path[-1] == "bias" and "norm" in "".join(path)
        else ""
    )
    raise CheckpointError(
        f"The parameter '{'.'.join(path)}' has no Hugging Face {HF_ARCHITECTURES[family]} counterpart.{hint}"
    )


def hf_order(path: tuple[str, ...]) -> tuple:
    """Sort key giving HF's order: embedding, layers by number, final norm, head."""
    match = _LAYER.match(path[0])
    group = {"embedding": 0, "norm": 2, "head": 3}.get(path[0], 1)
    return group, int(match.group(1)) if match else -1, path


def flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """{path tuple: leaf} of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, (*prefix, str(key))))
        else:
            out[(*prefix, str(key))] = value
    return out


def unflatten(flat: dict[tuple[str, ...], object]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def is_scanned(params: dict) -> bool:
    """True for the scan_layers layout: one "layers" entry with a leading [L] axis."""
    return "layers" in params and not any(_LAYER.match(k) for k in params)


def unrolled_leaves(params: dict) -> dict[tuple[str, ...], object]:
    """{path: leaf} in the unrolled layout; a scanned tree is cut into layers_i (leaves indexed by i)."""
    flat = flatten(params)
    if not is_scanned(params):
        return flat
    out = {}
    for path, leaf in flat.items():
        if path[0] != "layers":
            out[path] = leaf
            continue
        for i in range(leaf.shape[0]):
            out[(f"layers_{i}", *path[1:])] = _Slice(leaf, i)
    return out


class _Slice:
    """Layer i of a stacked leaf, materialised only when read (abstract leaves stay abstract)."""

    def __init__(self, stacked, index: int):
        self.stacked, self.index = stacked, index
        self.shape = tuple(stacked.shape[1:])
        self.dtype = stacked.dtype

    def __array__(self, dtype=None, copy=None):
        value = np.asarray(self.stacked[self.index])
        return value if dtype is None else value.astype(dtype)


def restack(unrolled: dict[tuple[str, ...], np.ndarray], like: dict) -> dict:
    """A nested tree in the layout of `like` (scanned or not) from unrolled {path: array}."""
    if not is_scanned(like):
        return unflatten(unrolled)
    flat_like = flatten(like)
    out = {}
    for path, leaf in flat_like.items():
        if path[0] != "layers":
            out[path] = unrolled[path]
            continue
        out[path] = np.stack([unrolled[(f"layers_{i}", *path[1:])] for i in range(leaf.shape[0])])
    return unflatten(out)
