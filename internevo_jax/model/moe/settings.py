"""The mixture-of-experts settings of a model, read once from the config (`MoEArgs`).

InternEvo passes `model.moe_layer_kwargs` to its MoE layer as keyword arguments; here every key
it may hold is a typed field, and a key that is unknown, or whose behaviour is not implemented,
is refused by name instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from internevo_jax.names import round_mlp_hidden_size

GSHARD = "GShard"
DROPLESS = "Dropless"
# InternEvo's MegaBlock-Dropless (block-sparse dropless, named "MegaBlock-D" in older configs)
# routes exactly as Dropless with its defaults (softmax, top-k, renormalised weights, the per-layer
# loss E/(T*k) * counts . mean scores); only its kernels differ.
MOE_TYPE_ALIASES = {"MegaBlock-Dropless": DROPLESS, "MegaBlock-D": DROPLESS}
MOE_TYPES = (GSHARD, DROPLESS, *MOE_TYPE_ALIASES)
SCORING_FUNCS = ("softmax", "sigmoid")
# How a shared expert's output joins the routed experts' (`num_shared_experts` > 0):
# "softmax2": out = moe * c0 + shared * c1 with (c0, c1) = softmax(Linear(H, 2)(x))  (InternLM, Mixtral)
# "sigmoid": out = moe + sigmoid(Linear(H, 1, no bias)(x)) * shared                  (Qwen2-MoE, Qwen3-MoE)
SHARED_MIX = ("softmax2", "sigmoid")


@dataclasses.dataclass(frozen=True)
class MoEArgs:
    """What an MoE feed-forward layer needs; docs/moe.md describes every field."""

    num_experts: int
    top_k: int
    expert_hidden_size: int
    routing: str = GSHARD  # GSHARD: capacity per expert, tokens over it dropped; DROPLESS: none dropped
    capacity_factor: float = 1.0  # GShard: capacity = max(ceil(T / E * capacity_factor * k), min_capacity)
    min_capacity: int = 4
    drop_tokens: bool = True  # GShard with False: no capacity limit (as Dropless)
    scoring_func: str = "softmax"  # Dropless: softmax or sigmoid scores
    normalize_weights: bool = True  # Dropless: top-k weights divided by their sum
    routed_scaling_factor: float = 1.0  # Dropless: weights times this after normalising
    # True: every layer's own load-balancing loss, summed over layers; False: one loss over all
    # layers' router scores together (HF Mixtral / Qwen3-MoE style; InternEvo's Qwen3-MoE).
    aux_loss_by_layer: bool = True
    num_shared_experts: int = 0
    shared_hidden_size: int = 0
    shared_mix: str = "softmax2"
    router_init_std: float = 0.0015
    grouped_matmul: str = "auto"  # model/moe/grouped_matmul.py

    def __post_init__(self):
        problems = []
        if self.num_experts < 2:
            problems.append(f"num_experts ({self.num_experts}) must be at least 2 for an MoE layer")
        if not 1 <= self.top_k <= self.num_experts:
            problems.append(
                f"top_k ({self.top_k}) must be between 1 and num_experts ({self.num_experts}): a token "
                "cannot pick more experts than there are"
            )
        if self.routing not in (GSHARD, DROPLESS):
            problems.append(f"routing {self.routing!r} is not one of {(GSHARD, DROPLESS)}")
        if self.scoring_func not in SCORING_FUNCS:
            problems.append(f"scoring_func {self.scoring_func!r} is not one of {SCORING_FUNCS}")
        if self.shared_mix not in SHARED_MIX:
            problems.append(f"shared_mix {self.shared_mix!r} is not one of {SHARED_MIX}")
        if self.capacity_factor <= 0:
            problems.append(f"capacity_factor ({self.capacity_factor}) must be positive")
        if problems:
            raise ValueError("invalid MoE settings: " + "; ".join(problems))

    def capacity(self, tokens: int) -> int | None:
        """Slots per expert for a group of `tokens` tokens (None: no limit)."""
        if self.routing == DROPLESS or not self.drop_tokens:
            return None
        per_expert = tokens / self.num_experts * self.capacity_factor * self.top_k
        return max(math.ceil(per_expert), self.min_capacity)


# moe_layer_kwargs InternEvo accepts and what happens to each here:
# value that is implemented (None: any value), and the field it sets.
_KWARGS = {
    "capacity_factor": "capacity_factor",
    "eval_capacity_factor": None,
    "min_capacity": "min_capacity",
    "drop_tokens": "drop_tokens",
    "scoring_func": "scoring_func",
    "normalize_expert_weights": "normalize_weights",
    "routed_scaling_factor": "routed_scaling_factor",
    "aux_loss_by_layer": "aux_loss_by_layer",
    "grouped_matmul": "grouped_matmul",
}
# Keys accepted with only the value that computes what this implementation computes.
_FIXED_KWARGS = {
    "noisy_gate_policy": (None, "None"),  # router noise (Jitter / RSample) is not implemented
    "use_fused_gating": (True,),  # the unfused top-1 path selects tokens at random (use_rts)
    "use_rts": (True, False),  # only read by the unfused top-1 path
    "drop_and_pad": (False,),
    "use_grouped_mlp": (True, False),  # kernel choice in InternEvo; here grouped_matmul
    "enable_fused_permute": (True, False),
    "token_dispatch_policy": ("alltoall", "allgather"),
    "deterministic_mode": (True, False),
    "drop_policy": ("probs", "position"),  # only read with a capacity in Dropless
    "moe_jitter_eps": None,  # only read with noisy_gate_policy="Jitter"
}


def moe_args_from_config(cfg: Any, *, shared_mix: str, router_init_std: float) -> MoEArgs:
    """The MoE settings of `cfg.model` (ValueError naming each key that cannot be honoured)."""
    m = cfg.model
    moe_type = MOE_TYPE_ALIASES.get(m.moe_type, m.moe_type)
    kwargs = dict(m.moe_layer_kwargs or {})
    problems = []
    if moe_type not in (GSHARD, DROPLESS):
        hint = (
            "MegaBlock's capacity routing is not implemented: use GShard (capacity per expert) or Dropless"
            if m.moe_type == "MegaBlock"
            else f"use one of {MOE_TYPES}"
        )
        problems.append(f"model.moe_type={m.moe_type!r}: {hint}")
    fields: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _KWARGS:
            if _KWARGS[key] is not None:
                fields[_KWARGS[key]] = value
        elif key in _FIXED_KWARGS:
            allowed = _FIXED_KWARGS[key]
            if allowed is not None and value not in allowed:
                problems.append(
                    f"model.moe_layer_kwargs.{key}={value!r} is not implemented; use {allowed[0]!r}"
                )
        else:
            known = ", ".join(sorted((*_KWARGS, *_FIXED_KWARGS)))
            problems.append(f"model.moe_layer_kwargs.{key} is not a known MoE setting (known: {known})")
    eval_cf = kwargs.get("eval_capacity_factor")
    if eval_cf is not None and eval_cf != kwargs.get("capacity_factor", 1.0):
        problems.append(
            "model.moe_layer_kwargs.eval_capacity_factor differs from capacity_factor: validation here "
            "runs the training capacity; set both to the same value"
        )
    if moe_type == DROPLESS and fields.get("capacity_factor") is not None:
        problems.append(
            "model.moe_layer_kwargs.capacity_factor is set with moe_type='Dropless': a Dropless layer with a "
            "capacity (InternEvo's drop_and_pad) is not implemented; use moe_type='GShard' for a capacity, "
            "or capacity_factor=None"
        )
    if fields.get("capacity_factor", 1.0) is None:
        if moe_type == GSHARD:
            fields["drop_tokens"] = False
        fields.pop("capacity_factor")
    if problems:
        raise ValueError("unsupported MoE settings: " + "; ".join(problems))
    # InternEvo's older key: moe_use_residual=True is one shared expert (when none are set).
    shared = int(m.num_shared_experts) or (1 if m.moe_use_residual else 0)
    hidden = m.mlp_hidden_size
    return MoEArgs(
        num_experts=int(m.num_experts),
        top_k=int(m.top_k),
        expert_hidden_size=hidden,
        routing=moe_type,
        num_shared_experts=shared,
        shared_hidden_size=round_mlp_hidden_size(hidden * shared, 1.0, m.multiple_of) if shared else 0,
        shared_mix=shared_mix,
        router_init_std=router_init_std,
        **fields,
    )
