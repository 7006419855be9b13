"""Our params (and optimizer moments) from an InternEvo checkpoint folder, and back.

`InternEvoFolder` opens a folder for one model: it reads the saved layout from the file names,
checks the tensors against the model, and hands out each leaf of our params tree in the model's
own layout (`leaf`), assembled from the rank pieces of the model shards or of one optimizer field.
`internevo_tensors` is the way back: our params as whole tensors by InternEvo name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.assemble import ModelShards, RankPieces, Stages, assemble
from internevo_jax.checkpoint.internevo_pt.experts import ExpertFiles
from internevo_jax.checkpoint.internevo_pt.folder import read_topology, scan
from internevo_jax.checkpoint.internevo_pt.naming import (
    EMBEDDING,
    HEAD,
    Entry,
    ExpertEntry,
    Naming,
    all_namings,
    naming_for,
    readable_families,
)
from internevo_jax.checkpoint.internevo_pt.optimizer import OptimizerPieces, RankGroups, isp_zero1_candidates
from internevo_jax.hf.relayout import relayout
from internevo_jax.hf.tensors import unrolled_leaves
from internevo_jax.model import abstract_params

logger = logging.getLogger("internevo_jax")

_QKV = ("wq", "wk", "wv", "wqkv")


def naming_of(model: Any) -> Naming:
    naming = naming_for(model.family)
    if naming is None:
        raise CheckpointError(
            f"InternEvo checkpoints of model family {model.family} are not read; the families read are "
            f"{', '.join(readable_families())}. Convert the run to Hugging Face format with InternEvo's tools and "
            'load that with ckpt_type="hf".'
        )
    return naming


def internevo_layout_model(model: Any, naming: Naming) -> Any:
    """`model` storing q/k/v as InternEvo's module of its family does (lanes unchanged, unrolled)."""
    args = dataclasses.replace(model.args, qkv_layout=naming.qkv_layout, scan_layers=False)
    return model.clone(args=args)


def _entries(naming: Naming, num_layers: int) -> list[tuple[Entry, int | None]]:
    rows: list[tuple[Entry, int | None]] = [(e, None) for e in naming.first]
    for i in range(num_layers):
        rows += [(e, i) for e in naming.layer_entries(i)]
    return rows + [(e, None) for e in naming.last]


def _sizes(model: Any) -> str:
    a = model.args
    return (
        f"num_layers={a.num_layers}, hidden_size={a.hidden_size}, vocab_size={a.vocab_size}, "
        f"num_attention_heads={a.num_heads}, num_kv_attention_heads={a.num_kv_heads}"
    )


class InternEvoFolder:
    """One InternEvo checkpoint folder read for `model` (a built model: family, args)."""

    def __init__(self, folder: str, model: Any):
        self.folder, self.model = folder, model
        self.naming = naming_of(model)
        self.layout = scan(folder)
        self._check_tensor_size()
        self.shards = ModelShards(folder, self.layout)
        self.stages = Stages(self.naming, [self.shards.names(p) for p in range(self.layout.pipeline)])
        self.experts = ExpertFiles(folder, os.listdir(folder)) if self.naming.experts else None
        self.internevo_model = internevo_layout_model(model, self.naming)
        self.expected = unrolled_leaves(abstract_params(self.internevo_model))
        names = set(self.shards.names(0)) | set(self.shards.names(self.layout.pipeline - 1))
        self._aliases = {new: old for old, new in self.naming.aliases if old in names}
        self._older_mlp = self._older_mlp_names()
        self.vocab_parallel_embedding = self._vocab_parallel()
        self.entries = self._check_entries()
        self._optimizer: OptimizerPieces | None = None
        self._moved_qkv: tuple[tuple | None, dict] = (
            None,
            {},
        )  # the last layer's q/k/v in the model's layout
        logger.info(
            "reading the InternEvo checkpoint %s (%s; saved with %s)",
            folder,
            model.family,
            self.layout.describe(),
        )

    # -- what the folder holds -------------------------------------------------------------
    def _check_tensor_size(self) -> None:
        args, tensor = self.model.args, self.layout.tensor
        if not self.layout.isp and (args.num_heads % tensor or args.num_kv_heads % tensor):
            raise CheckpointError(
                f"The InternEvo checkpoint {self.folder} was saved with tensor-parallel size {tensor} "
                f"(model_tp0..{tensor - 1} files), which does not divide the config's {args.num_heads} attention "
                f"heads and {args.num_kv_heads} kv heads: the files are not from this model ({_sizes(self.model)}). "
                "Set the model sizes of the run that saved it, or check that the folder holds one checkpoint."
            )

    def _older_mlp_names(self) -> bool:
        """Whether an InternLM1 folder holds the older MLP names (w2 = up, w3 = down): w2 then has
        w1's shape (both column-split up projections)."""
        if not self.naming.swapped_mlp_names:
            return False
        shard = self.shards.file(*self.shards.any_file(0, t=0), 0)
        prefix = f"{self.naming.layers_prefix}.0.mlp."
        shapes = {
            k: tuple(shard[f"{prefix}{k}.weight"].shape)
            for k in ("w1", "w2", "w3")
            if f"{prefix}{k}.weight" in shard
        }
        older = len(shapes) == 3 and shapes["w2"] == shapes["w1"] and shapes["w3"] != shapes["w1"]
        logger.info(
            "InternEvo MLP naming in %s: %s",
            self.folder,
            "older (w2 = up, w3 = down; as convert2hf_internlm.py reads)"
            if older
            else "current (w3 = up, w2 = down)",
        )
        return older

    def _vocab_parallel(self) -> bool:
        embed = self.naming.first[0].internevo.rsplit(".", 1)[0]
        topo = read_topology(self.folder)
        module = self.file_name(self.naming.first[0].internevo).removesuffix(".weight")
        return "word_embeddings" in module or topo.get(module, topo.get(embed, {})).get("dim") == 0

    def describe(self) -> str:
        """What the folder's names and shapes say it holds: family, layers, hidden size, vocabulary."""
        names = set(self.shards.names(0))
        families = [
            "/".join(n.families)
            for n in all_namings()
            if {e.internevo for e in n.layer_entries(0) if e.ours[-1] != "bias"} <= names
        ]
        shard = self.shards.file(*self.shards.any_file(0, t=0), 0)
        norm = next((v for k, v in shard.items() if k.endswith("norm.weight") and ".0." in k), None)
        parts = [f"{self.stages.num_layers} layers"]
        if norm is not None:
            parts.append(f"hidden_size {norm.shape[0]}")
        family = f"a {' or '.join(families)} model" if families else "a model of unknown family"
        return f"{family} ({', '.join(parts)})"

    def file_name(self, name: str) -> str:
        """The name this folder's files give the tensor our tables call `name` (older aliases, older MLP names)."""
        name = self._aliases.get(name, name)
        if self._older_mlp:
            for a, b in ((".mlp.w2.", ".mlp.w3."), (".mlp.w3.", ".mlp.w2.")):
                if a in name:
                    return name.replace(a, b)
        return name

    def _check_entries(self) -> list[tuple[Entry, int | None]]:
        model = self.model
        if self.stages.num_layers != model.args.num_layers:
            raise CheckpointError(
                f"The InternEvo checkpoint {self.folder} holds {self.stages.num_layers} layers, but the config's "
                f"model has {model.args.num_layers} ({_sizes(model)}). Set model.num_layers (and the other sizes) "
                "to those of the run that saved it."
            )
        rows = [(e, i) for e, i in _entries(self.naming, model.args.num_layers) if e.ours in self.expected]
        covered = {e.ours for e, _ in rows} | {
            path for i in range(model.args.num_layers) for _, path in self._expert_entries(i)
        }
        missing = sorted(set(self.expected) - covered)
        if missing:
            raise CheckpointError(
                f"The model's parameter '{'.'.join(missing[0])}' has no InternEvo {model.family} counterpart, so "
                f"{self.folder} cannot fill it. Check the model settings (e.g. qk_norm, tie_word_embeddings) "
                "against the run that saved the checkpoint."
            )
        wanted = {p: set() for p in range(self.layout.pipeline)}
        for e, i in rows:
            p, local = self.stages.local(e.internevo, i)
            wanted[p].add(self.file_name(local))
        for p in range(self.layout.pipeline):
            held = set(self.shards.names(p))
            extra, lacking = sorted(held - wanted[p]), sorted(wanted[p] - held)
            if extra or lacking:
                what = (
                    f"holds '{extra[0]}'{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}, which the model "
                    "has no place for"
                    if extra
                    else f"lacks '{lacking[0]}'{f' (and {len(lacking) - 1} more)' if len(lacking) > 1 else ''}, which "
                    "the model needs"
                )
                tied = any(
                    e.ours == ("head", "kernel") and self.file_name(e.internevo) in extra
                    for e in self.naming.last
                )
                if tied:
                    what += (
                        " (InternEvo's model has its own output head: set model.tie_word_embeddings=False)"
                    )
                raise CheckpointError(
                    f"The InternEvo checkpoint {self.folder} (stage {p}) {what}: it holds {self.describe()}, but "
                    f"the config's model is {model.family} with {_sizes(model)} (another model_type, or biases "
                    "on / off: no_bias, qkv_bias). Set model_type and the model settings of the run that saved it."
                )
        return rows

    # -- reading ---------------------------------------------------------------------------
    def optimizer(self, zero1: int | None = None) -> OptimizerPieces:
        """The optimizer files, unflattened per parameter (CheckpointError when there are none)."""
        if self._optimizer is None:
            if not self.layout.optimizer_ranks:
                raise CheckpointError(
                    f"The InternEvo checkpoint {self.folder} has no optimizer files (optimizer_tp*_pp*_zo*.pt): "
                    'load it with content=("model",) or a content list without "optimizer".'
                )
            if self.naming.experts:
                raise CheckpointError(
                    f"{self.folder} is a checkpoint of an MoE model, whose experts InternEvo's optimizer keeps in "
                    "separate expert-data parameter groups, which are not read: load its weights with "
                    'content=("model",) (the counters and data position load with the other content names).'
                )
            if self.layout.fsdp > 1:
                raise CheckpointError(
                    f"The InternEvo checkpoint {self.folder} was saved with FSDP, whose optimizer files hold torch "
                    'FSDP\'s flat parameters, which are not read. Load its weights with content=("model",) (the '
                    "counters and data position load with the other content names)."
                )
            self._optimizer = self._open_optimizer()
        return self._optimizer

    def _open_optimizer(self) -> OptimizerPieces:
        embed_head = frozenset(
            self.file_name(self.stages.local(e.internevo, i)[1])
            for e, i in self.entries
            if e.split in (EMBEDDING, HEAD)
        )

        def rank_groups(t, w, p):
            return RankGroups.of_shard(self.shards.file(t, w, p), embed_head, self.layout.isp)

        if not self.layout.isp:
            return OptimizerPieces(self.folder, self.layout, rank_groups)
        # isp: the zero1 size is not in the file names; the flat sizes tell which one fits.
        errors = []
        for zero1 in isp_zero1_candidates(self.layout):
            pieces = OptimizerPieces(self.folder, self.layout, rank_groups, isp_zero1=zero1)
            try:
                for p in range(self.layout.pipeline):
                    for w in range(self.layout.weight):
                        pieces._rank(*self.shards.any_file(p, w=w), p)
                return pieces
            except CheckpointError as e:
                errors.append(e)
        raise errors[-1]

    def _expert_entries(self, i: int) -> list[tuple[ExpertEntry, tuple[str, ...]]]:
        """Layer i's expert entries whose stacked leaf the model has."""
        rows = [(e, tuple(p.format(i=i) for p in e.ours)) for e in self.naming.experts]
        return [(e, path) for e, path in rows if path in self.expected]

    def leaf(self, path: tuple[str, ...], pieces: RankPieces | None = None) -> np.ndarray:
        """The unrolled leaf `path` of our model's params tree (model layout, float32), from the
        model shards or from `pieces` (one optimizer field)."""
        if self.experts is not None and path[0].startswith("layers_"):
            i = int(path[0].removeprefix("layers_"))
            for entry, expert_path in self._expert_entries(i):
                if expert_path == path:
                    p, local = self.stages.of_layer(i)
                    layer_id = p * (self.stages.num_layers // len(self.stages.counts)) + local
                    return self.experts.leaf(entry, layer_id, local, self.model.args.moe.num_experts)
        pieces = pieces or self.shards
        if path[0].startswith("layers_") and path[1] == "attention" and path[2] in _QKV:
            if self.model.args.qkv_layout != self.naming.qkv_layout:
                # wq, wk and wv come from one fused tensor (or go into one): move the layer's once.
                key = (path[0], path[3], getattr(pieces, "field", "model"))
                if self._moved_qkv[0] != key:
                    layer = {
                        e.ours: self._tensor(e, i, pieces)
                        for e, i in self.entries
                        if e.ours[0] == path[0]
                        and e.ours[1] == "attention"
                        and e.ours[2] in _QKV
                        and e.ours[3] == path[3]
                    }
                    moved = relayout(
                        layer,
                        self.model.args,
                        source_layout=self.naming.qkv_layout,
                        target_layout=self.model.args.qkv_layout,
                        lanes_to_halves=None,
                    )
                    self._moved_qkv = (key, moved)
                return self._moved_qkv[1][path]
        for e, i in self.entries:
            if e.ours == path:
                return self._tensor(e, i, pieces)
        raise KeyError(path)

    def _tensor(self, entry: Entry, i: int | None, pieces: RankPieces) -> np.ndarray:
        p, local = self.stages.local(entry.internevo, i)
        full = assemble(
            entry,
            p,
            self.file_name(local),
            pieces,
            self.shards,
            vocab_parallel_embedding=self.vocab_parallel_embedding,
        )
        array = full.T if entry.transpose else full
        want = tuple(self.expected[entry.ours].shape)
        if tuple(array.shape) != want:
            raise CheckpointError(
                f"The InternEvo tensor '{entry.internevo}' in {self.folder} assembles to shape "
                f"{tuple(full.shape)}, but the config's model ({_sizes(self.model)}) needs "
                f"{tuple(reversed(want)) if entry.transpose else want}. Set the model sizes (hidden_size, heads, kv "
                "heads, mlp_ratio, vocab_size) to those of the run that saved it."
            )
        return array  # a transposed view: the copy happens once, where the leaf is placed


def internevo_tensors(params: dict, model: Any) -> dict[str, np.ndarray]:
    """Our params tree (or a tree shaped like it: moments, master weights) as whole tensors by
    InternEvo name, in torch orientation and InternEvo's parameter order."""
    naming = naming_of(model)
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in unrolled_leaves(params).items()}
    flat = relayout(
        flat,
        model.args,
        source_layout=model.args.qkv_layout,
        target_layout=naming.qkv_layout,
        lanes_to_halves=None,
    )
    out = {}
    for e, _ in _entries(naming, model.args.num_layers):
        if e.ours in flat:
            out[e.internevo] = np.ascontiguousarray(flat[e.ours].T if e.transpose else flat[e.ours])
    for i in range(model.args.num_layers):
        for entry in naming.experts:
            stacked = flat.get(tuple(p.format(i=i) for p in entry.ours))
            for e in range(0 if stacked is None else stacked.shape[0]):
                out[entry.internevo.format(i=i, e=e)] = np.ascontiguousarray(stacked[e].T)
    return out
