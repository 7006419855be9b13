"""Our (unrolled) params tree <-> Hugging Face tensor names, through the family's `HFMapping`."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.registry import mapping_for
from internevo_jax.hf.spec import EXPERT
from internevo_jax.model.params import in_layout_of, is_scanned, unstack_layers

_LAYER = re.compile(r"^layers_(\d+)$")
EXPERT_RE = re.compile(r"^expert_(\d+)$")


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


def _expert_key(path: tuple[str, ...]) -> tuple[tuple[str, ...], int | None]:
    """(`path` with an "expert_<n>" component written "expert_{e}", n) or (path, None)."""
    for i, part in enumerate(path):
        match = EXPERT_RE.match(part)
        if match:
            return (*path[:i], EXPERT, *path[i + 1 :]), int(match.group(1))
    return path, None


def tensor_map(family: str, path: tuple[str, ...]) -> TensorMap:
    """The HF name of the parameter at `path` of an unrolled tree; CheckpointError when it has none.

    Paths of one expert of an MoE layer (hf/relayout.py `split_experts`) hold "expert_<n>"; their
    mapping entry holds "expert_{e}" and its HF name "{e}".
    """
    mapping = mapping_for(family)
    if path in mapping.top:
        return TensorMap(path, mapping.top[path], transpose=path[-1] == "kernel")
    match = _LAYER.match(path[0]) if path else None
    if match and len(path) >= 3:
        prefix = f"model.layers.{int(match.group(1))}."
        key, expert = _expert_key(path[1:])
        fill = (lambda name: name.format(e=expert)) if expert is not None else (lambda name: name)
        if key in mapping.layer:  # norm weights; an MoE router (its [H, E] array is an (in, out) kernel)
            return TensorMap(path, prefix + fill(mapping.layer[key]), transpose=path[-1] == "gate")
        if key[:-1] in mapping.layer and path[-1] in ("kernel", "bias"):
            suffix = "weight" if path[-1] == "kernel" else "bias"
            return TensorMap(
                path, f"{prefix}{fill(mapping.layer[key[:-1]])}.{suffix}", transpose=path[-1] == "kernel"
            )
    hint = (
        f" LayerNorm biases have no place in HF's {mapping.architecture} (it uses RMSNorm): export needs "
        "norm_type='rmsnorm'."
        if path and path[-1] == "bias" and "norm" in "".join(path)
        else ""
    )
    raise CheckpointError(
        f"The parameter '{'.'.join(path)}' has no Hugging Face {mapping.architecture} counterpart.{hint}"
    )


def hf_order(path: tuple[str, ...]) -> tuple:
    """Sort key giving HF's order: embedding, layers by number, final norm, head."""
    match = _LAYER.match(path[0])
    group = {"embedding": 0, "norm": 2, "head": 3}.get(path[0], 1)
    # Experts by number (expert_2 before expert_10).
    parts = tuple((0, int(m.group(1))) if (m := EXPERT_RE.match(p)) else (1, p) for p in path)
    return group, int(match.group(1)) if match else -1, parts


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
    """The nested dict of {path tuple: leaf}."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def unrolled_leaves(params: dict) -> dict[tuple[str, ...], object]:
    """{path: leaf} in the unrolled layout (a scanned tree is cut into layers_i; numpy leaves as views)."""
    return flatten(unstack_layers(params) if is_scanned(params) else params)


def restack(unrolled: dict[tuple[str, ...], np.ndarray], like: dict) -> dict:
    """A nested tree in the layout of `like` (scanned or not) from unrolled {path: array}."""
    return in_layout_of(unflatten(unrolled), like)
