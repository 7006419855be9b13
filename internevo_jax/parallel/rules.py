"""The one table that maps the model's logical axis names to mesh axes.

Layers name logical axes only; a parallel layout is a change of this table, never of the model.
Flax resolves a dimension with the FIRST rule (in table order) whose mesh axes are still free in
that array, so the order of the activation rules is what places "tensor" on the heads/mlp/vocab
dimension inside the tensor-parallel regions and on the sequence dimension outside them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from internevo_jax.config import Config, ConfigError
from internevo_jax.names import (
    ACT_BATCH,
    ACT_EMBED_DIM,
    ACT_HEADS_DIM,
    ACT_KV_DIM,
    ACT_LENGTH,
    ACT_MLP_DIM,
    ACT_STAGE,
    ACT_VOCAB_DIM,
    BATCH_AXES,
    EMBED,
    EXPERT,
    EXPERT_MLP,
    EXPERTS,
    FSDP,
    HEADS,
    KV_HEADS,
    LAYERS,
    MLP,
    NORM,
    PIPELINE,
    ROUTER,
    TENSOR,
    VOCAB,
)

SEQUENCE_PARALLEL_MODES = ("msp", "fsp", "isp")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


class LayoutRules(tuple):
    """The rules table, plus the one layout fact that is not a logical -> mesh mapping: how many
    chunks of layers each pipeline stage holds (model.num_chunks; > 1 is the circular schedule).

    It is an ordinary tuple of (logical, mesh axes) pairs wherever Flax reads it.
    """

    pipeline_chunks: int

    def __new__(cls, entries, pipeline_chunks: int = 1):
        obj = super().__new__(cls, entries)
        obj.pipeline_chunks = pipeline_chunks
        return obj

    def __getnewargs__(self):
        return (tuple(self), self.pipeline_chunks)


def _check_pipeline(cfg: Config) -> int:
    """The number of chunks per stage; ConfigError when the pipeline cannot hold the model."""
    source = cfg.source_path or "<config>"
    pp, chunks = cfg.parallel.pipeline.size, max(1, cfg.model.num_chunks)
    if pp == 1:
        return 1
    if not cfg.model.scan_layers:
        raise ConfigError(
            f"{source}: parallel.pipeline.size={pp} needs the layers stacked, but model.scan_layers=False "
            "is set: remove the key (pipeline runs stack the layers by themselves) or set it to True; "
            "each stage holds a slice of the stacked weights.",
            key="model.scan_layers",
            source=source,
        )
    layers = cfg.model.num_layers
    if layers % (pp * chunks):
        raise ConfigError(
            f"{source}: model.num_layers = {layers} cannot be cut into pipeline {pp} x num_chunks {chunks} "
            f"equal pieces: {layers} % {pp * chunks} = {layers % (pp * chunks)}; choose sizes whose "
            f"product divides {layers}.",
            key="parallel.pipeline.size",
            source=source,
        )
    return chunks


def logical_axis_rules(cfg: Config) -> Rules:
    """Logical-axis -> mesh-axis rules for the configured parallel layout.

    These are the rules of the COMPUTE layout (activations and the parameters as the layers use
    them); `master_axis_rules` derives the layout of the fp32 master copy and optimizer state.

    * mtp: Megatron column/row split of heads, kv_heads, mlp and vocab over "tensor".
    * msp / fsp: the same weights; activations whose last dim is the embedding (the residual
      stream, norms, dropout regions) are split along the sequence over "tensor" instead.
    * isp: weights are not split over "tensor"; the sequence is, through the whole layer,
      except q/k/v and the attention output, which are split by heads (XLA's all-to-all).
    * zero1.fsdp=True or weight.size > 1: the compute weights are sharded over "fsdp" too (and
      over "expert", which is carved out of the same group: config/parallel_sizes.py).
    * mixture of experts: expert weights are split over "expert" along their expert axis, and
      along their MLP width over "tensor" unless parallel.expert.no_tp (or mode "isp").
    """
    par = cfg.parallel
    chunks = _check_pipeline(cfg)
    mode = par.tensor.mode
    tp_weights = None if mode == "isp" else TENSOR
    sequence = TENSOR if mode in SEQUENCE_PARALLEL_MODES else None
    sharded_weights = par.zero1.fsdp or par.weight.size > 1
    moe = cfg.model.num_experts > 1
    expert_tp = None if (par.expert.no_tp or mode == "isp") else TENSOR
    table = (
        # activations; heads/mlp/vocab come before length so that they win "tensor" where both
        # appear in one array (q/k/v, the MLP hidden, the logits)
        (ACT_STAGE, PIPELINE),  # the stage axis of the pipeline schedule's buffers
        (ACT_BATCH, BATCH_AXES),
        (ACT_HEADS_DIM, TENSOR),
        (ACT_MLP_DIM, tp_weights),
        (ACT_VOCAB_DIM, tp_weights),
        (ACT_LENGTH, sequence),
        (ACT_EMBED_DIM, None),
        (ACT_KV_DIM, None),
        # parameters
        (VOCAB, tp_weights),
        (HEADS, tp_weights),
        (KV_HEADS, tp_weights),
        (MLP, tp_weights),
        *(_expert_rules(expert_tp) if moe else ()),
        *(_sharding_group(EMBED, moe) if sharded_weights else ((EMBED, None),)),
        (NORM, None),
        (LAYERS, PIPELINE),  # stacked layers (scan_layers): each stage holds its own
    )
    return LayoutRules(table, pipeline_chunks=chunks)


def _expert_rules(expert_tp: str | None) -> Rules:
    """An MoE model's parameter axes; they come before EMBED so that an expert weight's embed
    dimension falls to "fsdp" alone (its expert dimension holds "expert")."""
    return ((EXPERTS, EXPERT), (EXPERT_MLP, expert_tp), (ROUTER, None))


def _is_moe(rules: Rules) -> bool:
    return any(name == EXPERTS for name, _ in rules)


def _sharding_group(name: str, moe: bool) -> Rules:
    """`name` split over the ZeRO group: "fsdp", and for an MoE model "expert" x "fsdp" (the
    expert group is carved out of it), or "fsdp" alone where the array's "expert" axis is taken.
    Flax takes the first rule whose axes are free."""
    return ((name, (EXPERT, FSDP)), (name, FSDP)) if moe else ((name, FSDP),)


def master_axis_rules(rules: Rules) -> Rules:
    """Rules of the fp32 master parameters and optimizer moments: ZeRO-1.

    Every parameter with an embedding (or norm) dimension is sharded over the ZeRO group along
    it, whether or not the compute copy is (a no-op when those axes have size 1).
    """
    out: list = []
    moe = _is_moe(rules)
    for name, axes in rules:
        entries = _sharding_group(name, moe) if name in (EMBED, NORM) else ((name, axes),)
        out.extend(e for e in entries if e not in out)
    return tuple(out)


def params_sharded_for_compute(rules: Rules) -> bool:
    """True when the compute copy of the weights stays sharded over "fsdp" (FSDP / ZeRO-3)."""
    return any(name == EMBED and axes is not None and FSDP in axes for name, axes in rules)


def shardings_for(logical_specs, mesh: Mesh, rules) -> object:
    """Map a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a [micro_num, rows, length] batch: rows split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: dict, mesh: Mesh, global_rows: int) -> dict:
    """Place this process's rows of a batch onto the mesh as global arrays, rows sharded.

    Each array is [micro_num, local_rows, length]; every process passes only the rows of the
    data-parallel ranks it feeds, so no host ever holds the whole global batch.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in batch.items():
        shape = (value.shape[0], global_rows, *value.shape[2:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
    return out
