"""The mixture-of-experts auxiliary loss and expert-load metrics, from the routing statistics the
MoE layers sow (model/moe/layer.py) during one micro-batch's forward pass.

As in InternEvo: moe_loss = moe_loss_coeff * (the layers' load-balancing losses summed over
layers, or one loss over all layers' router scores when aux_loss_by_layer=False), per row (one
data-parallel rank's micro-batch) and then averaged over rows; the trained loss is
cross-entropy + moe_loss, and the metrics line shows the two apart ("loss" is the cross-entropy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from internevo_jax.model.moe.routing import Routing
from internevo_jax.model.moe.settings import MoEArgs


def stacked_routing(moe_state) -> Routing | None:
    """Every MoE layer's Routing stacked on a leading layer axis [L, R, ...] (layer order), or
    None when the model sowed none (a dense model)."""
    found: list[tuple[int, Routing]] = []

    def visit(node, layer: int | None) -> None:
        if isinstance(node, Routing):
            found.append((layer if layer is not None else -1, node))
        elif isinstance(node, dict):
            for key, value in node.items():
                index = int(key.split("_")[1]) if key.startswith("layers_") else layer
                visit(value, index)
        elif isinstance(node, tuple | list):
            for value in node:
                visit(value, layer)

    visit(moe_state or {}, None)
    if not found:
        return None
    found.sort(key=lambda pair: pair[0])
    routings = [r for _, r in found]
    if len(routings) == 1 and routings[0].layer_aux.ndim == 2:  # scan_layers: already [L, R, ...]
        return routings[0]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *routings)


def moe_loss_and_metrics(moe_state, moe: MoEArgs, coeff: float) -> tuple[jax.Array, dict]:
    """(coeff * auxiliary loss, {"moe_loss", "moe_load" [L, E], "moe_dropped" [L]})."""
    r = stacked_routing(moe_state)
    if r is None:
        return jnp.float32(0.0), {}
    if moe.aux_loss_by_layer:
        per_row = r.layer_aux.sum(axis=0)
    else:
        # HF's loss over all layers at once: E * sum_e (choices_e / N) * (score_e / N), N = L * tokens.
        n = jnp.maximum(r.tokens.sum(axis=0), 1.0)[:, None]
        per_row = moe.num_experts * ((r.counts.sum(axis=0) / n) * (r.score_sums.sum(axis=0) / n)).sum(-1)
    loss = coeff * per_row.mean()
    dropped = 1.0 - r.kept.astype(jnp.float32).mean(axis=(1, 2, 3))
    return loss, {"moe_loss": loss, "moe_load": r.load.mean(axis=1), "moe_dropped": dropped}
