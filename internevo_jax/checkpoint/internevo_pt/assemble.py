"""Whole tensors from the per-rank pieces of an InternEvo checkpoint.

A `RankPieces` hands out one rank's piece of a tensor by its name in that pipeline stage's file;
`Stages` maps a global layer index to its stage and local index; `assemble` joins the pieces of one
tensor the way naming.py says its module cut it. Everything works one tensor at a time.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.folder import SavedLayout, load_pt, model_file_name
from internevo_jax.checkpoint.internevo_pt.naming import (
    COLUMN,
    EMBEDDING,
    HEAD,
    LINEAR_SPLITS,
    QKV_THREE,
    REPLICATED,
    ROW,
    Entry,
    Naming,
)


class RankPieces(Protocol):
    """One kind of per-rank tensors (model weights, or one optimizer field) of a folder."""

    def piece(self, t: int, w: int, p: int, name: str):  # -> torch.Tensor
        ...


def local_tensor(tensor):
    """The plain tensor of a saved value: a torch ShardedTensor's (FSDP's sharded state dict) or a
    DTensor's local part, else the tensor itself."""
    if hasattr(tensor, "local_shards"):
        shards = tensor.local_shards()
        return shards[0].tensor if shards else tensor.new_empty((0,))
    if hasattr(tensor, "to_local"):
        return tensor.to_local()
    return tensor


def to_numpy(tensor) -> np.ndarray:
    """A saved tensor (any float dtype, possibly a sharded-tensor wrapper) as float32 numpy."""
    return local_tensor(tensor).detach().float().numpy()


class ModelShards:
    """The model_*.pt files of a folder, opened on first use (memory-mapped)."""

    def __init__(self, folder: str, layout: SavedLayout):
        self.folder, self.layout = folder, layout
        self._open: dict[tuple[int, int, int, int], dict] = {}

    def file(self, t: int, w: int, p: int, d: int = 0) -> dict:
        key = (t, w, p, d)
        if key not in self._open:
            name = self.file_name(t, w, p, d)
            states = load_pt(f"{self.folder}/{name}")
            if not isinstance(states, dict):
                raise CheckpointError(
                    f"{self.folder}/{name} holds a {type(states).__name__}, not InternEvo's state dict of tensors."
                )
            self._open[key] = states
        return self._open[key]

    def file_name(self, t: int, w: int, p: int, d: int = 0) -> str:
        return model_file_name(t, w, p, d, isp=self.layout.isp, fsdp=self.layout.fsdp > 1)

    def any_file(self, p: int, *, t: int | None = None, w: int | None = None) -> tuple[int, int]:
        """(t, w) of a saved file of stage `p` with the given tensor or weight rank (isp saves some pairs)."""
        if not self.layout.isp:
            return (t or 0, 0)
        for r in range(max(self.layout.tensor, self.layout.weight)):
            rt, rw = r % self.layout.tensor, r % self.layout.weight
            if (t is None or rt == t) and (w is None or rw == w):
                return rt, rw
        raise AssertionError("isp files cover every tensor and weight rank")  # scan() checked

    def piece(self, t: int, w: int, p: int, name: str):
        """Rank (t, w)'s tensor `name` of stage p; FSDP's row chunks joined."""
        chunks = []
        for d in range(self.layout.fsdp):
            states = self.file(t, w, p, d)
            if name not in states:
                shown = self.file_name(t, w, p, d)
                raise CheckpointError(
                    f"{self.folder}/{shown} has no tensor '{name}', which the other shards of this checkpoint "
                    "have: the files come from different runs or models. Keep the files of one checkpoint only."
                )
            chunks.append(states[name])
        if len(chunks) == 1:
            return chunks[0]
        import torch

        return torch.cat([local_tensor(c) for c in chunks], 0)

    def names(self, p: int) -> list[str]:
        t, w = self.any_file(p, t=0)
        return [n for n in self.file(t, w, p) if not n.endswith(".inv_freq")]


class Stages:
    """Which pipeline stage holds which layers: stage p's files number their layers from 0."""

    def __init__(self, naming: Naming, names_per_stage: list[list[str]]):
        pattern = re.compile(rf"^{re.escape(naming.layers_prefix)}\.(\d+)\.")
        self.naming = naming
        self.counts = []
        for p, names in enumerate(names_per_stage):
            if any(re.match(r"^\d+\.", n) for n in names):
                raise CheckpointError(
                    "The InternEvo checkpoint was saved with an interleaved pipeline (model.num_chunks > 1): its "
                    f"stage files hold several model chunks. Reading those is not supported; save it with "
                    f"num_chunks=1 (stage {p})."
                )
            indexes = {int(m.group(1)) for n in names if (m := pattern.match(n))}
            if indexes and indexes != set(range(len(indexes))):
                raise CheckpointError(
                    f"Pipeline stage {p} of the InternEvo checkpoint holds layers {sorted(indexes)}, not 0..n-1: "
                    "the files come from different runs or a pipeline layout this reader does not know."
                )
            self.counts.append(len(indexes))
        self.offsets = [sum(self.counts[:p]) for p in range(len(self.counts))]

    @property
    def num_layers(self) -> int:
        return sum(self.counts)

    def of_layer(self, i: int) -> tuple[int, int]:
        """(stage, local index) of global layer i."""
        for p, (start, count) in enumerate(zip(self.offsets, self.counts)):
            if start <= i < start + count:
                return p, i - start
        raise IndexError(i)

    def local(self, global_name: str, i: int | None) -> tuple[int, str]:
        """(stage, name in that stage's files) of a tensor; i: its layer, None outside the layers."""
        if i is None:
            first = {e.internevo for e in self.naming.first}
            return (0 if global_name in first else len(self.counts) - 1), global_name
        p, local_i = self.of_layer(i)
        prefix = f"{self.naming.layers_prefix}.{i}."
        return p, f"{self.naming.layers_prefix}.{local_i}.{global_name[len(prefix) :]}"


def assemble(
    entry: Entry,
    p: int,
    name: str,
    pieces: RankPieces,
    shards: ModelShards,
    *,
    vocab_parallel_embedding: bool,
) -> np.ndarray:
    """The whole tensor of `entry` (torch orientation, float32) from its per-rank pieces."""
    layout = shards.layout
    if layout.isp and entry.split in LINEAR_SPLITS:
        parts = [to_numpy(pieces.piece(*shards.any_file(p, w=w), p, name)) for w in range(layout.weight)]
        return np.concatenate(parts, axis=0)
    ranks = [shards.any_file(p, t=t) for t in range(layout.tensor)]
    if entry.split == REPLICATED:
        first = to_numpy(pieces.piece(*ranks[0], p, name))
        if len(ranks) > 1 and not np.array_equal(first, last := to_numpy(pieces.piece(*ranks[-1], p, name))):
            files = [shards.file_name(*ranks[i], p) for i in (0, -1)]
            raise CheckpointError(
                f"'{name}' is the same on every tensor rank in InternEvo, but it differs between {files[0]} and "
                f"{files[1]} in {shards.folder} (largest difference {np.abs(first - last).max():.3g}): the "
                "files come from different runs or steps. Keep the files of one checkpoint only."
            )
        return first
    parts = [to_numpy(pieces.piece(t, w, p, name)) for t, w in ranks]
    if len({x.shape for x in parts}) > 1:
        files = ", ".join(f"{shards.file_name(t, w, p)} {x.shape}" for (t, w), x in zip(ranks, parts))
        raise CheckpointError(
            f"The tensor ranks of '{name}' have different shapes ({files}) in {shards.folder}: the files come "
            "from different runs or models. Keep the files of one checkpoint only."
        )
    if entry.split in (COLUMN, HEAD) or (entry.split == EMBEDDING and vocab_parallel_embedding):
        return np.concatenate(parts, axis=0)
    if entry.split in (ROW, EMBEDDING):
        return np.concatenate(parts, axis=1)
    if entry.split == QKV_THREE:  # each rank: (3, its heads * head_dim, ...)
        return np.concatenate([x.reshape(3, -1, *x.shape[1:]) for x in parts], axis=1).reshape(
            -1, *parts[0].shape[1:]
        )
    raise AssertionError(entry.split)


def split(entry: Entry, full: np.ndarray, tensor: int, *, vocab_parallel_embedding: bool) -> list[np.ndarray]:
    """`assemble`'s inverse over tensor ranks (mtp/msp/fsp): rank t's piece of `full` for every t."""
    if entry.split == REPLICATED:
        return [full] * tensor
    if entry.split in (COLUMN, HEAD) or (entry.split == EMBEDDING and vocab_parallel_embedding):
        return np.split(full, tensor, axis=0)
    if entry.split in (ROW, EMBEDDING):
        return np.split(full, tensor, axis=1)
    if entry.split == QKV_THREE:
        three = full.reshape(3, -1, *full.shape[1:])
        return [x.reshape(-1, *full.shape[1:]) for x in np.split(three, tensor, axis=1)]
    raise AssertionError(entry.split)
