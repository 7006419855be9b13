"""Converting parameter trees between the unrolled layout (layers_0 .. layers_{L-1}) and the
scanned layout (one "layers" entry whose leaves have a leading [L] axis).

Works on jax arrays, on numpy arrays (which stay numpy, on the host), on ShapeDtypeStructs
(unstacking only) and on flax's LogicallyPartitioned boxes (the "layers" logical axis is added or
removed with the leading dimension).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internevo_jax.names import LAYERS

_LAYER_KEY = re.compile(r"^layers_(\d+)$")


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.LogicallyPartitioned)


def _params_root(tree: dict) -> tuple[dict, bool]:
    # Accept both `variables` ({"params": {...}}) and the bare params dict.
    if "params" in tree and len(tree) == 1:
        return tree["params"], True
    return tree, False


def abstract_params(model: nn.Module) -> dict:
    """The bare params tree of `model` as ShapeDtypeStructs (no boxes), without running init."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, ids, ids)["params"])


def stack_layers(tree: dict) -> dict:
    """layers_0 .. layers_{L-1} -> "layers" with a leading [L] axis on every leaf."""
    params, wrapped = _params_root(dict(tree))
    params = dict(params)
    indices = sorted(int(m.group(1)) for k in params if (m := _LAYER_KEY.match(k)))
    if indices != list(range(len(indices))) or not indices:
        raise ValueError(f"expected layers_0 .. layers_N, got layer keys {indices}")
    layers = [params.pop(f"layers_{i}") for i in indices]

    def stack(*leaves):
        if _is_box(leaves[0]):
            value = jnp.stack([leaf.value for leaf in leaves])
            return leaves[0].replace(value=value, names=(LAYERS, *leaves[0].names))
        if isinstance(leaves[0], np.ndarray):
            return np.stack(leaves)  # host weights (checkpoint conversion) are not moved to a device
        return jnp.stack(leaves)

    params["layers"] = jax.tree.map(stack, *layers, is_leaf=_is_box)
    return {"params": params} if wrapped else params


def unstack_layers(tree: dict) -> dict:
    """The stacked "layers" entry (leading [L] axis) -> layers_0 .. layers_{L-1}."""
    params, wrapped = _params_root(dict(tree))
    params = dict(params)
    stacked = params.pop("layers")
    leaves = jax.tree.leaves(stacked, is_leaf=_is_box)
    num_layers = (leaves[0].value if _is_box(leaves[0]) else leaves[0]).shape[0]

    def take(i):
        def pick(leaf):
            if _is_box(leaf):
                return leaf.replace(value=leaf.value[i], names=tuple(leaf.names[1:]))
            if isinstance(leaf, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
            return leaf[i]  # a view for numpy arrays: no copy of the weights

        return jax.tree.map(pick, stacked, is_leaf=_is_box)

    for i in range(num_layers):
        params[f"layers_{i}"] = take(i)
    return {"params": params} if wrapped else params


def is_scanned(tree: dict) -> bool:
    """True for the scanned layout: a "layers" entry and no layers_i entries."""
    params, _ = _params_root(tree)
    return "layers" in params and not any(_LAYER_KEY.match(k) for k in params)


def in_layout_of(tree: dict, like: dict) -> dict:
    """`tree` in the layer layout of `like`: stacked when `like` is scanned, unrolled when it is not."""
    if is_scanned(tree) == is_scanned(like):
        return tree
    return stack_layers(tree) if is_scanned(like) else unstack_layers(tree)
