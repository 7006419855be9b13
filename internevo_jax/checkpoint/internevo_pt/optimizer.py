"""InternEvo's hybrid ZeRO optimizer files: flat fp32 partitions <-> per-parameter tensors.

What InternEvo's HybridZeroOptimizer does (internlm/solver/optimizer/hybrid_zero_optim.py and
internlm/train/utils.py), per (tensor, weight, pipeline) rank:

* parameter groups, in this order: "default"; "embed_head" under isp (the embedding and head, which
  isp keeps out of weight parallelism); "fp32" (parameters kept in float32; every parameter when
  the model runs in float32). A group's parameters keep the model's parameter order.
* each group's parameters are sorted by size, largest first (a stable sort), and handed one by one
  to the zero rank holding the fewest elements so far (the first such rank on a tie);
* a zero rank flattens its parameters, in that order, into one fp32 tensor (`flat_fp32_weights
  [group]`); torch's Adam keeps `exp_avg` / `exp_avg_sq` of that flat tensor, with `step`.
* the zero ranks: files zo{z} are the zero1 ranks of the default and fp32 groups; under isp the
  files are per data rank d, the default/fp32 groups are split over zero1 ranks inside the
  weight-data group ((d * tensor + t) // weight % zero1) and embed_head over all data ranks.
* beside each optimizer file InternEvo saves the split it used (`zero_devide_optim_plan`, in
  gpus-<world>_wp-<w>_tp-<t>_dp-<d>_pp-<p>_zo-<z>.pt): per group, per zero rank, the parameters'
  "<index by size>_<dims>". Where it exists it is followed (overlap_sync_param assigns parameters
  to ranks another way); otherwise the split above is recomputed.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.folder import PLAN_FILE, SavedLayout, load_pt, optimizer_file_name

DEFAULT, EMBED_HEAD, FP32 = "default", "embed_head", "fp32"
FIELDS = ("master", "exp_avg", "exp_avg_sq")


def group_names(isp: bool) -> list[str]:
    """InternEvo's parameter groups in their order (their index is the group id)."""
    return [DEFAULT, EMBED_HEAD, FP32] if isp else [DEFAULT, FP32]


def group_of(name: str, is_fp32: bool, embed_head_names: frozenset[str], isp: bool) -> str:
    if isp and name in embed_head_names:
        return EMBED_HEAD
    return FP32 if is_fp32 else DEFAULT


Param = tuple[str, tuple[int, ...]]  # a parameter's name in its shard file, and its shape there


def by_size(params: list[Param]) -> list[Param]:
    """A group's parameters largest first, ties in model order: the order InternEvo numbers them in."""
    return sorted(params, key=lambda item: math.prod(item[1]), reverse=True)


def plan_ids(params: list[Param], ranks: list[list[Param]]) -> list[list[str]]:
    """InternEvo's record of a split (its zero_devide_optim_plan): per rank, "<index by size>_<dims>"."""
    index = {name: i for i, (name, _) in enumerate(by_size(params))}
    return [["_".join(map(str, (index[name], *shape))) for name, shape in rank] for rank in ranks]


def from_plan(params: list[Param], ids: list[str], where: str) -> list[Param]:
    """The parameters a zero rank holds, in its flat order, from the ids InternEvo recorded."""
    ordered, out = by_size(params), []
    for text in ids:
        index, *dims = (int(x) for x in str(text).split("_"))
        if index >= len(ordered) or tuple(dims) != ordered[index][1]:
            raise CheckpointError(
                f"{where}: the recorded optimizer split names parameter {text}, which the model shard's "
                "parameters do not have: the split file belongs to another run or model."
            )
        out.append(ordered[index])
    return out


def partition(params: list[Param], ranks: int) -> list[list[Param]]:
    """InternEvo's split of one group's (name, shape) list over `ranks` zero ranks (without
    overlap_sync_param; the split file records any split, `from_plan`)."""
    ordered = by_size(params)
    per_rank: list[list] = [[] for _ in range(ranks)]
    sizes = [0] * ranks
    for item in ordered:
        r = sizes.index(min(sizes))
        per_rank[r].append(item)
        sizes[r] += math.prod(item[1])
    return per_rank


@dataclasses.dataclass
class RankGroups:
    """The groups of one (tensor, weight, pipeline) rank: {group: [(name, shape)]} in model order."""

    groups: dict[str, list[tuple[str, tuple[int, ...]]]]

    @classmethod
    def of_shard(cls, shard: dict, embed_head_names: frozenset[str], isp: bool) -> RankGroups:
        import torch

        groups: dict[str, list] = {g: [] for g in group_names(isp)}
        for name, tensor in shard.items():
            if name.endswith(".inv_freq"):
                continue
            is_fp32 = getattr(tensor, "dtype", None) == torch.float32
            groups[group_of(name, is_fp32, embed_head_names, isp)].append((name, tuple(tensor.shape)))
        return cls(groups)


def zero_rank(group: str, file_rank: int, t: int, layout, zero1: int) -> tuple[int, int]:
    """(zero rank, zero world size) of `group` in optimizer file `file_rank` of tensor rank t;
    `layout` (a SavedLayout or the writer's TargetLayout) gives isp, tensor, weight, optimizer_ranks."""
    if not layout.isp:
        return file_rank, layout.optimizer_ranks
    if group == EMBED_HEAD:
        return file_rank, layout.optimizer_ranks
    return (file_rank * layout.tensor + t) // layout.weight % zero1, zero1


def isp_zero1_candidates(layout: SavedLayout) -> list[int]:
    """The zero1 sizes an isp run may have used: divisors of its weight-data size."""
    wdp = layout.optimizer_ranks * layout.tensor // layout.weight
    return [z for z in range(1, wdp + 1) if wdp % z == 0]


class OptimizerPieces:
    """The optimizer files of a folder, unflattened per parameter: a `RankPieces` per field."""

    def __init__(self, folder: str, layout: SavedLayout, rank_groups, isp_zero1: int | None = None):
        """`rank_groups(t, w, p)` gives that rank's RankGroups (from its model shard)."""
        self.folder, self.layout, self.rank_groups = folder, layout, rank_groups
        self.zero1 = isp_zero1
        self.plans = {
            (int(m.group("t")), int(m.group("w")), int(m.group("p")), int(m.group("d"))): m
            for n in os.listdir(folder)
            if (m := PLAN_FILE.match(n))
        }
        self._pieces: dict[tuple[int, int, int], dict[str, dict[str, np.ndarray]]] = {}
        self.scalars: dict | None = None  # grad_scaler and Adam's step, from the first file read

    def field(self, name: str) -> _Field:
        return _Field(self, name)

    def _rank(self, t: int, w: int, p: int) -> dict[str, dict[str, np.ndarray]]:
        key = (t, w, p)
        if key not in self._pieces:
            self._pieces.clear()  # one rank's optimizer pieces at a time
            self._pieces[key] = self._read_rank(t, w, p)
        return self._pieces[key]

    def _read_rank(self, t: int, w: int, p: int) -> dict[str, dict[str, np.ndarray]]:
        groups = self.rank_groups(t, w, p).groups
        out: dict[str, dict[str, np.ndarray]] = {}
        names = group_names(self.layout.isp)
        seen_ranks: dict[tuple[str, int], int] = {}
        for file_rank in range(self.layout.optimizer_ranks):
            # isp: data rank d's file is that of weight rank (d * tensor + t) % weight; it holds the
            # default/fp32 partitions of that weight rank and its own part of embed_head.
            file_w = (file_rank * self.layout.tensor + t) % self.layout.weight if self.layout.isp else 0
            fname = optimizer_file_name(t, file_w, p, file_rank, isp=self.layout.isp)
            states = None
            for gid, group in enumerate(names):
                params = groups.get(group) or []
                if not params or (group != EMBED_HEAD and file_w != w):
                    continue
                if states is None:
                    states = load_pt(f"{self.folder}/{fname}", tensors_only=False)
                    flats, moments = _flat_tensors(states, f"{self.folder}/{fname}")
                    if self.scalars is None:
                        self.scalars = _scalars(states)
                z, size, mine = self._assigned(params, group, gid, t, (t, file_w, p, file_rank))
                if seen_ranks.get((group, z)) is not None:
                    continue  # another data rank of the same zero rank: the same partition
                seen_ranks[(group, z)] = file_rank
                if not mine:
                    continue
                expected = sum(math.prod(s) for _, s in mine)
                if gid not in flats:
                    raise CheckpointError(
                        f"{self.folder}/{fname} has no flat fp32 weights of parameter group {gid} ({group}), "
                        f"which should hold {len(mine)} parameters here: the optimizer files do not belong to "
                        "these model shards, or were saved with another zero1 size. Load with "
                        'content=("model",) to take the weights only.'
                    )
                arrays = {"master": flats[gid], "exp_avg": moments[gid][0], "exp_avg_sq": moments[gid][1]}
                for field, flat in arrays.items():
                    if flat.size != expected:
                        raise CheckpointError(
                            f"{self.folder}/{fname}: parameter group {gid} ({group}) holds {flat.size} elements of "
                            f"{field}, but the model shard's parameters on zero rank {z} of {size} add up to "
                            f"{expected}: the optimizer files do not belong to these model shards (another run, "
                            'model or zero1 size). Load with content=("model",) to take the weights only.'
                        )
                    start = 0
                    for name, shape in mine:
                        n = math.prod(shape)
                        out.setdefault(name, {})[field] = flat[start : start + n].reshape(shape)
                        start += n
        return out

    def _assigned(self, params, group: str, gid: int, t: int, file_key: tuple) -> tuple[int, int, list]:
        """(zero rank, zero size, its (name, shape) list) of `group` in one optimizer file: from the
        split file saved beside it when there is one, else recomputed."""
        file_rank = file_key[-1]
        match = self.plans.get(file_key)
        if match is None:
            z, size = zero_rank(group, file_rank, t, self.layout, self.zero1 or 1)
            return z, size, partition(params, size)[z]
        where = f"{self.folder}/{match.string}"
        plan = load_pt(where)
        z = file_rank if group == EMBED_HEAD else int(match.group("z"))
        try:
            size, ids = len(plan[gid]), plan[gid][z]
        except (IndexError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{where} records no split of parameter group {gid} for zero rank {z}: it belongs to another "
                "run or layout."
            ) from e
        return z, size, from_plan(params, ids, where)


class _Field:
    def __init__(self, owner: OptimizerPieces, field: str):
        self.owner, self.field = owner, field

    def piece(self, t: int, w: int, p: int, name: str):
        import torch

        pieces = self.owner._rank(t, w, p)
        if name not in pieces:
            raise CheckpointError(
                f"The optimizer files of rank tp{t} wp{w} pp{p} in {self.owner.folder} hold no state of '{name}': "
                "they do not belong to these model shards."
            )
        return torch.from_numpy(pieces[name][self.field])


def _flat_tensors(
    states, path: str
) -> tuple[dict[int, np.ndarray], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """{group id: flat fp32 weights} and {group id: (exp_avg, exp_avg_sq)} of one optimizer file."""
    try:
        flats = {int(g): t.detach().float().numpy() for g, t in states["flat_fp32_weights"].items()}
        base = states["base_optim_states"]
        moments = {}
        for gid, group in enumerate(base["param_groups"]):
            if gid in flats:
                (index,) = group["params"]  # the rank's one flat tensor of this group
                state = base["state"][index]
                moments[gid] = (
                    state["exp_avg"].detach().float().numpy(),
                    state["exp_avg_sq"].detach().float().numpy(),
                )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"{path} is not an InternEvo hybrid-ZeRO optimizer file (no {e} where expected). FSDP runs save "
            'another optimizer format, which is not read: load with content=("model",) and the run\'s '
            "counters through the other content names."
        ) from e
    return flats, moments


def _scalars(states) -> dict:
    base = states["base_optim_states"]
    steps = [int(s["step"]) for s in base["state"].values() if isinstance(s, dict) and "step" in s]
    return {"grad_scaler": dict(states.get("grad_scaler") or {}), "adam_step": steps[0] if steps else 0}
