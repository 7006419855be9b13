"""An InternEvo checkpoint folder: which files it holds, the parallel layout they were saved under,
and reading one `.pt` file (memory-mapped, without InternEvo installed).

File names (InternEvo's internlm/checkpoint/components.py):

    model_tp{t}_pp{p}.pt           tensor modes mtp / msp / fsp
    model_tp{t}_wp{w}_pp{p}.pt     tensor mode isp (w: weight-parallel rank)
    model_tp{t}_pp{p}_dp{d}.pt     FSDP (d: the data rank holding that row chunk)
    optimizer_tp{t}_pp{p}_zo{z}.pt, optimizer_tp{t}_wp{w}_pp{p}_dp{d}.pt (isp)
    sampler.pt, context.pt, schedulder.pt (sic), topo_*.json
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pickle
import re
from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError, first_line

MODEL_FILE = re.compile(r"^model_tp(?P<t>\d+)(?:_wp(?P<w>\d+))?_pp(?P<p>\d+)(?:_(?:dp|zo)(?P<d>\d+))?\.pt$")
OPTIMIZER_FILE = re.compile(
    r"^optimizer_tp(?P<t>\d+)(?:_wp(?P<w>\d+))?_pp(?P<p>\d+)_(?:zo|dp)(?P<z>\d+)\.pt$"
)
# The optimizer split each optimizer file's rank used (its rank_unique_id): d is its data rank.
PLAN_FILE = re.compile(
    r"^gpus-\d+_wp-(?P<w>\d+)_tp-(?P<t>\d+)_dp-(?P<d>\d+)_pp-(?P<p>\d+)_zo-(?P<z>\d+)\.pt$"
)
SAMPLER, CONTEXT, SCHEDULER = "sampler.pt", "context.pt", "schedulder.pt"


@dataclasses.dataclass(frozen=True)
class SavedLayout:
    """The parallel layout an InternEvo folder was written under, read from its file names."""

    tensor: int
    pipeline: int
    weight: int = 1  # isp's weight-parallel size
    fsdp: int = 1  # FSDP's data size (row chunks of every tensor)
    isp: bool = False
    optimizer_ranks: int = 0  # zo / dp files per (tp, wp, pp); 0: no optimizer files

    def describe(self) -> str:
        parts = [f"tensor {self.tensor}", f"pipeline {self.pipeline}"]
        if self.isp:
            parts.append(f"isp with weight {self.weight}")
        if self.fsdp > 1:
            parts.append(f"FSDP over {self.fsdp}")
        return ", ".join(parts)


def is_internevo_folder(path: str) -> bool:
    """Whether `path` is a local folder holding InternEvo model shards."""
    return os.path.isdir(path) and any(MODEL_FILE.match(n) for n in os.listdir(path))


def _ranks(matches: list[re.Match], key: str) -> list[int]:
    return sorted({int(m.group(key) or 0) for m in matches})


def _contiguous(values: list[int], what: str, folder: str, pattern: str) -> int:
    size = len(values)
    if values != list(range(size)):
        missing = sorted(set(range(max(values) + 1)) - set(values))
        raise CheckpointError(
            f"The InternEvo checkpoint {folder} lacks the {what} rank(s) {missing} ({pattern}): the folder is "
            "incomplete. Copy every file of the checkpoint folder again."
        )
    return size


def scan(folder: str) -> SavedLayout:
    """The layout of `folder`; CheckpointError naming a missing shard or a mix of layouts."""
    names = sorted(os.listdir(folder))
    models = [m for n in names if (m := MODEL_FILE.match(n))]
    if not models:
        raise CheckpointError(f"{folder} holds no InternEvo model shard (model_tp*_pp*.pt).")
    kinds = {(m.group("w") is not None, m.group("d") is not None) for m in models}
    if len(kinds) > 1:
        raise CheckpointError(
            f"{folder} mixes model shards of different layouts ({', '.join(m.string for m in models[:4])}, ...): "
            "the files come from different runs or settings. Keep the files of one checkpoint only."
        )
    isp, fsdp = kinds.pop()
    tensor = _contiguous(_ranks(models, "t"), "tensor", folder, "model_tp<t>_...")
    pipeline = _contiguous(_ranks(models, "p"), "pipeline", folder, "..._pp<p>...")
    weight = _contiguous(_ranks(models, "w"), "weight", folder, "..._wp<w>_...") if isp else 1
    chunks = _contiguous(_ranks(models, "d"), "FSDP data", folder, "..._dp<d>.pt") if fsdp else 1
    present = {
        (int(m.group("t")), int(m.group("w") or 0), int(m.group("p")), int(m.group("d") or 0)) for m in models
    }
    # isp saves the files of the ranks (t, w) = (r % tensor, r % weight), not the whole grid.
    wanted = (
        {(t, w, p, 0) for t, w, p in _isp_pairs(tensor, weight, pipeline)}
        if isp
        else set(itertools.product(range(tensor), [0], range(pipeline), range(chunks)))
    )
    missing = sorted(wanted - present)
    if missing:
        raise CheckpointError(
            f"The InternEvo checkpoint {folder} lacks {len(missing)} model shard(s), e.g. "
            f"{model_file_name(*missing[0], isp=isp, fsdp=fsdp)}: the folder is incomplete. Copy every file of "
            "the checkpoint folder again."
        )
    optimizers = [m for n in names if (m := OPTIMIZER_FILE.match(n))]
    return SavedLayout(
        tensor=tensor,
        pipeline=pipeline,
        weight=weight,
        fsdp=chunks,
        isp=isp,
        optimizer_ranks=len(_ranks(optimizers, "z")) if optimizers else 0,
    )


def _isp_pairs(tensor: int, weight: int, pipeline: int) -> set[tuple[int, int, int]]:
    """The (tensor, weight, pipeline) ranks whose model files an isp run writes."""
    # The first data rank (r < tensor) and the first weight-data rank (r < weight) save.
    return {(r % tensor, r % weight, p) for r in range(max(tensor, weight)) for p in range(pipeline)}


def model_file_name(t: int, w: int, p: int, d: int, *, isp: bool, fsdp: bool) -> str:
    """InternEvo's model shard name of one rank."""
    if isp:
        return f"model_tp{t}_wp{w}_pp{p}.pt"
    return f"model_tp{t}_pp{p}_dp{d}.pt" if fsdp else f"model_tp{t}_pp{p}.pt"


def plan_file_name(world: int, t: int, w: int, p: int, d: int, z: int) -> str:
    """InternEvo's file of the optimizer split of one rank (HybridZeroOptimizer.rank_unique_id)."""
    return f"gpus-{world}_wp-{w}_tp-{t}_dp-{d}_pp-{p}_zo-{z}.pt"


def optimizer_file_name(t: int, w: int, p: int, z: int, *, isp: bool) -> str:
    """InternEvo's optimizer file of one rank: z is the zero1 rank, or the data rank under isp."""
    return f"optimizer_tp{t}_wp{w}_pp{p}_dp{z}.pt" if isp else f"optimizer_tp{t}_pp{p}_zo{z}.pt"


def read_topology(folder: str) -> dict:
    """The merged topo_*.json files: {module name: {"dim": int}} of vocab-parallel embeddings."""
    topo: dict = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("topo_") and name.endswith(".json"):
            path = os.path.join(folder, name)
            try:
                with open(path) as f:
                    topo.update(json.load(f))
            except (OSError, ValueError) as e:
                raise CheckpointError(f"cannot read {path}: {first_line(e)}. Copy the file again.") from e
    return topo


class _Stub:
    """Stands in for an InternEvo class met in a pickle (ParallelMode in the optimizer's param
    groups): InternEvo need not be installed to read its checkpoints, and nothing here uses them."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


# Modules a checkpoint's pickles may name: tensors, the sampler's numpy RNG state, plain containers.
_ALLOWED_MODULES = ("torch", "numpy", "collections", "builtins", "copyreg", "_codecs")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "internlm":
            return type(name, (_Stub,), {"__module__": module})
        if module.split(".")[0] not in _ALLOWED_MODULES:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint file")
        return super().find_class(module, name)


class _RestrictedPickle:
    """A pickle module for torch.load that loads InternEvo's objects as stubs and nothing foreign."""

    Unpickler = _Unpickler
    load = staticmethod(lambda f, **kw: _Unpickler(f, **kw).load())
    __name__ = "internevo_restricted_pickle"


def load_pt(path: str, *, tensors_only: bool = True) -> Any:
    """One torch.save file, memory-mapped: its tensors are read from disk when touched.

    `tensors_only` uses torch's weights-only loader (model shards); otherwise a restricted
    unpickler that reads InternEvo's own classes as stubs (optimizer, sampler, context files).
    """
    torch = import_torch()
    if not os.path.isfile(path):
        raise CheckpointError(
            f"The InternEvo checkpoint file {path} does not exist. Copy every file of the checkpoint folder."
        )
    try:
        if tensors_only:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return torch.load(
            path, map_location="cpu", mmap=True, weights_only=False, pickle_module=_RestrictedPickle
        )
    except Exception as e:  # torch raises RuntimeError, EOFError, pickle errors ... for a bad file
        raise CheckpointError(
            f"cannot read the InternEvo checkpoint file {path} ({os.path.getsize(path)} bytes): {first_line(e)}. "
            "The file is truncated or is not a torch.save file; copy it again from the run's checkpoint folder."
        ) from e


def import_torch():
    """torch, or a CheckpointError saying how to install it (it is an optional extra)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            "Reading or writing InternEvo's PyTorch checkpoints needs torch, which training does not: "
            "pip install 'internevo_jax[torch]' (the CPU build is enough: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)."
        ) from e
    return torch
