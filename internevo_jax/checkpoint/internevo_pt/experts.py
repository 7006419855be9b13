"""The routed experts of an InternEvo MoE checkpoint, which live outside the model shards.

InternEvo's checkpoint manager (try_save_moe_checkpoint) writes every MoE layer's experts to
model_moe_layer{l}_expert{e}_tp{t}.pt, l = pipeline rank * (num_layers // pipeline size) + the
layer's index on its stage (the tensor names inside keep the stage's own index). Two layouts:

* list (moe_layer_kwargs use_grouped_mlp=False): one file per global expert e, each matrix a torch
  (out, in) weight cut over the tensor ranks t like a dense MLP's;
* grouped (InternEvo's default GroupedFeedForward): one file per expert-parallel rank e, its
  experts stacked [experts / ep, in, out] (already our orientation), never tensor-split.

The tensors' rank (2 or 3) tells the layouts apart.
"""

from __future__ import annotations

import re

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.assemble import to_numpy
from internevo_jax.checkpoint.internevo_pt.folder import load_pt
from internevo_jax.checkpoint.internevo_pt.naming import COLUMN, ExpertEntry

MOE_FILE = re.compile(r"^model_moe_layer(?P<l>\d+)_expert(?P<e>\d+)_tp(?P<t>\d+)\.pt$")


def expert_file_name(layer: int, expert: int, t: int) -> str:
    return f"model_moe_layer{layer}_expert{expert}_tp{t}.pt"


class ExpertFiles:
    """The expert files of a folder, opened on first use (memory-mapped)."""

    def __init__(self, folder: str, names: list[str]):
        self.folder = folder
        found = [m for n in names if (m := MOE_FILE.match(n))]
        self.experts: dict[int, set[int]] = {}
        self.tensor = 1 + max((int(m.group("t")) for m in found), default=0)
        for m in found:
            self.experts.setdefault(int(m.group("l")), set()).add(int(m.group("e")))
        self._open: dict[str, dict] = {}

    def _file(self, name: str) -> dict:
        if name not in self._open:
            self._open[name] = load_pt(f"{self.folder}/{name}")
        return self._open[name]

    def _tensor(self, layer: int, e: int, t: int, key: str):
        name = expert_file_name(layer, e, t)
        states = self._file(name)
        if key not in states:
            raise CheckpointError(
                f"{self.folder}/{name} has no tensor '{key}': the expert files come from another model or "
                "MoE implementation (InternEvo's GShard/Dropless experts are read; MegaBlock's are not)."
            )
        return states[key]

    def leaf(self, entry: ExpertEntry, layer: int, local: int, num_experts: int) -> np.ndarray:
        """The stacked [experts, in, out] array of `entry` for file layer id `layer` (stage index `local`)."""
        ids = sorted(self.experts.get(layer, ()))
        if not ids or ids != list(range(len(ids))):
            raise CheckpointError(
                f"The InternEvo checkpoint {self.folder} lacks expert files of MoE layer {layer} "
                f"(model_moe_layer{layer}_expert<e>_tp<t>.pt; found experts {ids}): the folder is incomplete."
            )
        first = self._tensor(layer, 0, 0, entry.internevo.format(i=local, e=0))
        if first.dim() == 3:  # grouped: one file per expert-parallel rank, [experts / ep, in, out]
            stacked = np.concatenate(
                [to_numpy(self._tensor(layer, r, 0, entry.internevo.format(i=local, e=r))) for r in ids]
            )
        else:
            experts = []
            for e in ids:
                key = entry.internevo.format(i=local, e=e)
                parts = [to_numpy(self._tensor(layer, e, t, key)) for t in range(self.tensor)]
                experts.append(np.concatenate(parts, axis=0 if entry.split == COLUMN else 1).T)
            stacked = np.stack(experts)
        if stacked.shape[0] != num_experts:
            raise CheckpointError(
                f"The InternEvo checkpoint {self.folder} holds {stacked.shape[0]} experts in MoE layer {layer}, "
                f"but the config's model has model.num_experts={num_experts}. Set the run's MoE settings."
            )
        return stacked
