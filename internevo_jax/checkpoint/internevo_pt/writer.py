"""Write an InternEvo checkpoint folder: model shards per rank, hybrid-ZeRO optimizer files and the
run's counters, as InternEvo's checkpoint manager lays them out (internlm/checkpoint/components.py).

The input is whole tensors by InternEvo name (reader.internevo_tensors gives them for our params);
each rank's piece is cut as naming.py describes, so InternEvo loads the folder with the same
tensor / pipeline / weight / FSDP sizes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from internevo_jax.checkpoint.internevo_pt.assemble import split
from internevo_jax.checkpoint.internevo_pt.experts import expert_file_name
from internevo_jax.checkpoint.internevo_pt.folder import (
    CONTEXT,
    SAMPLER,
    SCHEDULER,
    import_torch,
    model_file_name,
    optimizer_file_name,
    plan_file_name,
)
from internevo_jax.checkpoint.internevo_pt.naming import COLUMN, EMBEDDING, HEAD, LINEAR_SPLITS, Entry
from internevo_jax.checkpoint.internevo_pt.optimizer import (
    EMBED_HEAD,
    RankGroups,
    group_names,
    partition,
    plan_ids,
    zero_rank,
)


@dataclasses.dataclass(frozen=True)
class TargetLayout:
    """The InternEvo parallel sizes to write for. `data` counts data ranks (isp and FSDP files);
    `zero1` the zero ranks of the optimizer (default: every data rank)."""

    tensor: int = 1
    pipeline: int = 1
    weight: int = 1
    isp: bool = False
    fsdp: bool = False
    data: int = 1
    zero1: int = 0

    @property
    def optimizer_ranks(self) -> int:
        """Optimizer files per (tensor, weight, pipeline) rank: one per data rank under isp, else per zero rank."""
        return self.data if self.isp else self.zero_ranks

    @property
    def zero_ranks(self) -> int:
        if self.isp:
            wdp = self.data * self.tensor // self.weight
            return self.zero1 if 0 < self.zero1 <= wdp else wdp
        return self.zero1 if 0 < self.zero1 <= self.data else self.data


@dataclasses.dataclass
class OptimizerState:
    """Whole fp32 tensors by InternEvo name of the master weights and Adam moments, plus scalars."""

    master: dict[str, np.ndarray]
    exp_avg: dict[str, np.ndarray]
    exp_avg_sq: dict[str, np.ndarray]
    step: int
    grad_scaler: dict  # {"_scale", "_growth_step", "_hysteresis_step"}
    lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0


def check_layout(layout: TargetLayout, args) -> None:
    """ValueError naming the size that cannot hold the model `args` (ModelArgs)."""
    sizes = {
        "tensor": layout.tensor,
        "pipeline": layout.pipeline,
        "weight": layout.weight,
        "data": layout.data,
    }
    bad = [f"{k}={v}" for k, v in sizes.items() if v < 1]
    if bad:
        raise ValueError(f"parallel sizes must be >= 1, got {', '.join(bad)}.")
    problems = []
    if not layout.isp and (args.num_heads % layout.tensor or args.num_kv_heads % layout.tensor):
        problems.append(
            f"tensor={layout.tensor} does not divide the {args.num_heads} attention heads and "
            f"{args.num_kv_heads} kv heads"
        )
    if layout.pipeline > args.num_layers:
        problems.append(f"pipeline={layout.pipeline} is more than the {args.num_layers} layers")
    if layout.isp and (layout.data * layout.tensor) % layout.weight:
        problems.append(
            f"weight={layout.weight} does not divide data * tensor = {layout.data * layout.tensor}"
        )
    if layout.weight > 1 and not layout.isp:
        problems.append("a weight-parallel size needs tensor mode isp (--isp)")
    if layout.isp and layout.fsdp:
        problems.append("isp and FSDP shards do not mix (InternEvo saves one or the other)")
    if layout.zero1 > 0 and not layout.isp and layout.data % layout.zero1:
        problems.append(f"zero1={layout.zero1} does not divide data={layout.data}")
    if problems:
        raise ValueError(f"Cannot write an InternEvo checkpoint with these sizes: {'; '.join(problems)}.")


def partition_uniform(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """InternEvo's layer ranges per pipeline stage (num_chunks=1): later stages take the remainder."""
    base, extra = divmod(num_layers, stages)
    ranges, start = [], 0
    for p in range(stages):
        size = base + (1 if p >= stages - extra else 0)
        ranges.append((start, start + size))
        start += size
    return ranges


def _fsdp_chunks(x: np.ndarray, n: int) -> list[np.ndarray]:
    """torch.chunk's row split over n ranks (trailing ranks may hold nothing), as FSDP shards."""
    size = -(-x.shape[0] // n) if x.ndim else 1
    return [x[d * size : (d + 1) * size] for d in range(n)]


class _Ranks:
    """Each (tensor, weight, pipeline) rank's pieces of whole tensors, in InternEvo's order."""

    def __init__(
        self, entries_by_stage: list[list[tuple[Entry, str, str]]], layout: TargetLayout, vocab_parallel
    ):
        self.entries_by_stage, self.layout, self.vocab_parallel = entries_by_stage, layout, vocab_parallel

    def pairs(self) -> list[tuple[int, int]]:
        lay = self.layout
        if not lay.isp:
            return [(t, 0) for t in range(lay.tensor)]
        return sorted({(r % lay.tensor, r % lay.weight) for r in range(max(lay.tensor, lay.weight))})

    def pieces(self, tensors: dict[str, np.ndarray], t: int, w: int, p: int) -> dict[str, np.ndarray]:
        lay, out = self.layout, {}
        for entry, global_name, local_name in self.entries_by_stage[p]:
            full = tensors[global_name]
            if lay.isp and entry.split in LINEAR_SPLITS:
                out[local_name] = np.split(full, lay.weight, axis=0)[w]
            elif lay.isp and entry.split not in (EMBEDDING, HEAD):
                out[local_name] = full
            else:
                out[local_name] = split(
                    entry, full, lay.tensor, vocab_parallel_embedding=self.vocab_parallel
                )[t]
        return out


def stage_entries(
    naming, num_layers: int, present: set[str], stages: int
) -> list[list[tuple[Entry, str, str]]]:
    """(entry, global name, name in its stage's file) per stage, for the tensors in `present`."""
    out = []
    for p, (start, stop) in enumerate(partition_uniform(num_layers, stages)):
        rows = [(e, e.internevo, e.internevo) for e in naming.first] if p == 0 else []
        for i in range(start, stop):
            local = naming.layer_entries(i - start)
            rows += [(g, g.internevo, loc.internevo) for g, loc in zip(naming.layer_entries(i), local)]
        if p == stages - 1:
            rows += [(e, e.internevo, e.internevo) for e in naming.last]
        out.append([r for r in rows if r[1] in present])
    return out


def write_folder(
    folder: str,
    naming,
    num_layers: int,
    model_tensors: dict[str, np.ndarray],
    layout: TargetLayout,
    *,
    dtype: Any,
    optimizer: OptimizerState | None = None,
    context: dict | None = None,
    sampler: dict | None = None,
    scheduler: dict | None = None,
) -> list[str]:
    """Write the folder; returns the file names written. `dtype` is the torch dtype of the model shards."""
    torch = import_torch()
    os.makedirs(folder, exist_ok=True)
    entries = stage_entries(naming, num_layers, set(model_tensors), layout.pipeline)
    ranks = _Ranks(entries, layout, vocab_parallel=False)
    written = []
    data_files = layout.data if layout.fsdp else 1
    for p in range(layout.pipeline):
        for t, w in ranks.pairs():
            pieces = ranks.pieces(model_tensors, t, w, p)
            for d in range(data_files):
                # A copy per tensor: torch.save of a view would store the whole base array.
                shard = {
                    n: torch.tensor(_fsdp_chunks(x, data_files)[d] if layout.fsdp else x).to(dtype)
                    for n, x in pieces.items()
                }
                name = model_file_name(t, w, p, d, isp=layout.isp, fsdp=layout.fsdp)
                torch.save(shard, os.path.join(folder, name))
                written.append(name)
            if optimizer is not None and not naming.experts:  # MoE optimizer groups: not written
                written += _write_optimizer(folder, ranks, pieces, optimizer, t, w, p, dtype, torch)
    written += _write_experts(folder, naming, num_layers, model_tensors, layout, dtype, torch)
    for fname, obj in ((CONTEXT, context), (SAMPLER, sampler), (SCHEDULER, scheduler)):
        if obj is not None:
            torch.save(obj, os.path.join(folder, fname))
            written.append(fname)
    return written


def _write_experts(folder, naming, num_layers, tensors, layout: TargetLayout, dtype, torch) -> list[str]:
    """The list-layout expert files (experts.py): one per layer, global expert and tensor rank."""
    written = []
    per_stage = num_layers // layout.pipeline  # InternEvo's file numbering of the MoE layers
    for p, (start, stop) in enumerate(partition_uniform(num_layers, layout.pipeline)):
        for local, i in enumerate(range(start, stop)):
            files: dict[str, dict] = {}
            for entry in naming.experts:
                e = 0
                while (full := tensors.get(entry.internevo.format(i=i, e=e))) is not None:
                    parts = np.split(full, layout.tensor, axis=0 if entry.split == COLUMN else 1)
                    for t, part in enumerate(parts):
                        name = expert_file_name(p * per_stage + local, e, t)
                        files.setdefault(name, {})[entry.internevo.format(i=local, e=e)] = torch.tensor(
                            part
                        ).to(dtype)
                    e += 1
            for name, states in files.items():
                torch.save(states, os.path.join(folder, name))
                written.append(name)
    return written


def _write_optimizer(folder, ranks: _Ranks, pieces, opt: OptimizerState, t, w, p, dtype, torch) -> list[str]:
    lay = ranks.layout
    embed_head = frozenset(n for e, _, n in ranks.entries_by_stage[p] if e.split in (EMBEDDING, HEAD))
    shapes = {n: _TensorLike(x.shape, dtype) for n, x in pieces.items()}
    groups = RankGroups.of_shard(shapes, embed_head, lay.isp).groups
    fields = {f: ranks.pieces(getattr(opt, f), t, w, p) for f in ("master", "exp_avg", "exp_avg_sq")}
    names = group_names(lay.isp)
    written = []
    for file_rank in range(lay.optimizer_ranks):
        file_w = (file_rank * lay.tensor + t) % lay.weight if lay.isp else 0
        if file_w != w:
            continue  # written with the pieces of its own weight rank
        flats, state, param_groups, plan, index = {}, {}, [], [], 0
        for gid, group in enumerate(names):
            params = groups[group]
            z, size = zero_rank(group, file_rank, t, lay, lay.zero_ranks)
            split = partition(params, size)
            plan.append(plan_ids(params, split))
            mine = split[z]
            hyper = {
                "name": group,
                "lr": opt.lr,
                "betas": tuple(opt.betas),
                "eps": opt.eps,
                "weight_decay": opt.weight_decay,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "optimizer_mode": "data" if group == EMBED_HEAD else "zero1",
                "dtype": dtype if params else None,
            }
            if mine:
                flat = {f: np.concatenate([fields[f][n].reshape(-1) for n, _ in mine]) for f in fields}
                flats[gid] = torch.from_numpy(flat["master"].astype(np.float32))
                state[index] = {
                    "step": torch.tensor(float(opt.step)),
                    "exp_avg": torch.from_numpy(flat["exp_avg"].astype(np.float32)),
                    "exp_avg_sq": torch.from_numpy(flat["exp_avg_sq"].astype(np.float32)),
                }
                param_groups.append({**hyper, "params": [index]})
                index += 1
            else:  # torch keeps the group's own (unpartitioned) parameters, without state
                param_groups.append({**hyper, "params": list(range(index, index + len(params)))})
                index += len(params)
        states = {
            "grad_scaler": dict(opt.grad_scaler),
            "base_optim_states": {"state": state, "param_groups": param_groups},
            "flat_fp32_weights": flats,
        }
        name = optimizer_file_name(t, w, p, file_rank, isp=lay.isp)
        torch.save(states, os.path.join(folder, name))
        # InternEvo saves the split apart from the optimizer state, named by the rank.
        world = lay.tensor * lay.pipeline * lay.data
        default_zero = zero_rank(names[0], file_rank, t, lay, lay.zero_ranks)[0]
        plan_name = plan_file_name(world, t, w, p, file_rank, default_zero)
        torch.save(plan, os.path.join(folder, plan_name))
        written += [name, plan_name]
    return written


@dataclasses.dataclass(frozen=True)
class _TensorLike:
    shape: tuple[int, ...]
    dtype: Any
