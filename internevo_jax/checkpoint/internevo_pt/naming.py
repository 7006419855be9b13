"""InternEvo's parameter names, per model family, and how its tensor parallelism splits each one.

Each `Entry` ties one InternEvo state-dict name to one leaf of our unrolled params tree stored in
the family's InternEvo q/k/v layout (`Naming.qkv_layout`; hf/relayout.py moves it into the
model's own). A torch Linear weight is (out, in) and our kernel (in, out): kernels are transposed.

How a tensor is cut across ranks (InternEvo's modules, internlm/model/ops/linear.py and
modules/embedding.py):

* COLUMN (ColumnParallelLinear: q/k/v, w1, w3, experts' up projections): rows (out) over tensor;
* ROW (RowParallelLinear: wo, w2): columns (in) over tensor;
* QKV_THREE (InternLM1's fused Wqkv): each rank's rows are (3, its heads, head_dim): the global
  tensor interleaves the ranks' q, k and v blocks;
* EMBEDDING (Embedding1D): the hidden dimension over tensor (a vocab-parallel embedding, named
  `*.word_embeddings.weight` or marked dim 0 in topo_*.json, splits rows instead);
* HEAD (the vocab-parallel output layer): rows (vocab) over tensor;
* REPLICATED: norms and row-parallel biases, the same on every rank.

Under tensor mode isp every Linear (column or row alike) is one ISPLinear that splits its rows over
the weight-parallel group, and the rows it gathers are the global layout; the embedding and head
keep their tensor split; nothing else is split.
"""

from __future__ import annotations

import dataclasses

from internevo_jax.names import QKV_CONCAT, QKV_GROUPED, QKV_SEPARATE

COLUMN, ROW, QKV_THREE, EMBEDDING, HEAD, REPLICATED = (
    "column",
    "row",
    "qkv_three",
    "embedding",
    "head",
    "replicated",
)
LINEAR_SPLITS = (COLUMN, ROW, QKV_THREE)  # the ones isp cuts over the weight-parallel group instead


@dataclasses.dataclass(frozen=True)
class Entry:
    """One InternEvo tensor: `internevo` and `ours` hold "{i}" for the layer index."""

    internevo: str
    ours: tuple[str, ...]
    split: str

    @property
    def transpose(self) -> bool:
        # torch's Linear weights are (out, in): our kernels, and an MoE router's [hidden, experts] gate.
        return self.ours[-1] in ("kernel", "gate")


@dataclasses.dataclass(frozen=True)
class ExpertEntry:
    """One matrix of every routed expert of a layer. InternEvo saves each expert in its own file,
    model_moe_layer{i}_expert{e}_tp{t}.pt; `internevo` holds "{i}" and "{e}" (the global expert
    id), `ours` the stacked [experts, in, out] leaf. `split` cuts each expert's (out, in) weight."""

    internevo: str
    ours: tuple[str, ...]
    split: str


@dataclasses.dataclass(frozen=True)
class Naming:
    """The InternEvo state dict of one model family."""

    families: tuple[str, ...]
    layers_prefix: str  # "blocks" (InternLM1) or "layers": the module list the layer index follows
    first: tuple[Entry, ...]  # before the layers (pipeline stage 0): the embedding
    layer: tuple[Entry, ...]
    last: tuple[Entry, ...]  # after the layers (the last stage): final norm, head
    qkv_layout: str  # how InternEvo's module stores q/k/v (names.QKV_LAYOUTS)
    # Older InternEvo names of the same tensor, read as the current one.
    aliases: tuple[tuple[str, str], ...] = ()
    experts: tuple[ExpertEntry, ...] = ()  # routed experts (MoE families), in their own files
    # InternLM1's MLP names moved: older checkpoints (and InternEvo's convert2hf_internlm.py) hold
    # w2 = up (column) and w3 = down (row); newer InternEvo computes w2(silu(w1 x) * w3 x). The
    # shapes tell them apart (reader.py).
    swapped_mlp_names: bool = False

    def layer_entries(self, i: int) -> list[Entry]:
        """Layer `i`'s tensors, named with its index."""
        return [
            Entry(e.internevo.format(i=i), tuple(p.format(i=i) for p in e.ours), e.split) for e in self.layer
        ]


def linear(internevo: str, ours: tuple[str, ...], split: str, bias: bool = False) -> tuple[Entry, ...]:
    """A Linear's weight (and bias: cut like the rows, or replicated for a row-parallel layer)."""
    weight = Entry(f"{internevo}.weight", (*ours, "kernel"), split)
    if not bias:
        return (weight,)
    return weight, Entry(f"{internevo}.bias", (*ours, "bias"), REPLICATED if split == ROW else split)


def layer_path(*parts: str) -> tuple[str, ...]:
    return ("layers_{i}", *parts)


INTERNLM1 = Naming(
    families=("INTERNLM",),
    layers_prefix="blocks",
    first=(Entry("embedding.weight", ("embedding", "embedding"), EMBEDDING),),
    last=(
        Entry("norm.weight", ("norm", "scale"), REPLICATED),
        Entry("head.weight", ("head", "kernel"), HEAD),
    ),
    layer=(
        *linear("blocks.{i}.mixer.Wqkv", layer_path("attention", "wqkv"), QKV_THREE, bias=True),
        *linear("blocks.{i}.mixer.out_proj", layer_path("attention", "wo"), ROW, bias=True),
        Entry("blocks.{i}.norm1.weight", layer_path("attention_norm", "scale"), REPLICATED),
        Entry("blocks.{i}.norm2.weight", layer_path("ffn_norm", "scale"), REPLICATED),
        # In the modules' registration order (the optimizer's parameter order).
        *linear("blocks.{i}.mlp.w1", layer_path("feed_forward", "w1"), COLUMN),
        *linear("blocks.{i}.mlp.w2", layer_path("feed_forward", "w2"), ROW),
        *linear("blocks.{i}.mlp.w3", layer_path("feed_forward", "w3"), COLUMN),
    ),
    qkv_layout=QKV_CONCAT,
    aliases=(("embedding.word_embeddings.weight", "embedding.weight"),),
    swapped_mlp_names=True,
)

INTERNLM2 = Naming(
    families=("INTERNLM2",),
    layers_prefix="layers",
    first=(Entry("tok_embeddings.weight", ("embedding", "embedding"), EMBEDDING),),
    last=(
        Entry("norm.weight", ("norm", "scale"), REPLICATED),
        Entry("output.weight", ("head", "kernel"), HEAD),
    ),
    layer=(
        # Grouped per kv head, so each tensor rank's rows are whole groups: plain row concatenation.
        *linear("layers.{i}.attention.wqkv", layer_path("attention", "wqkv"), COLUMN, bias=True),
        *linear("layers.{i}.attention.wo", layer_path("attention", "wo"), ROW, bias=True),
        Entry("layers.{i}.attention_norm.weight", layer_path("attention_norm", "scale"), REPLICATED),
        Entry("layers.{i}.ffn_norm.weight", layer_path("ffn_norm", "scale"), REPLICATED),
        *linear("layers.{i}.feed_forward.w1", layer_path("feed_forward", "w1"), COLUMN),
        *linear("layers.{i}.feed_forward.w2", layer_path("feed_forward", "w2"), ROW),
        *linear("layers.{i}.feed_forward.w3", layer_path("feed_forward", "w3"), COLUMN),
    ),
    qkv_layout=QKV_GROUPED,
    aliases=(("tok_embeddings.word_embeddings.weight", "tok_embeddings.weight"),),
)

LLAMA2 = Naming(
    families=("LLAMA2",),
    layers_prefix="layers",
    first=INTERNLM2.first,
    last=INTERNLM2.last,
    layer=(
        *linear("layers.{i}.attention.wq", layer_path("attention", "wq"), COLUMN, bias=True),
        *linear("layers.{i}.attention.wk", layer_path("attention", "wk"), COLUMN, bias=True),
        *linear("layers.{i}.attention.wv", layer_path("attention", "wv"), COLUMN, bias=True),
        *linear("layers.{i}.attention.wo", layer_path("attention", "wo"), ROW, bias=True),
        *INTERNLM2.layer[4:],
    ),
    qkv_layout=QKV_SEPARATE,
    aliases=INTERNLM2.aliases,
)


def all_namings() -> tuple[Naming, ...]:
    """Every family's naming: the ones above, the dense zoo's and the MoE families' (naming_zoo.py
    and naming_moe.py build on these)."""
    from internevo_jax.checkpoint.internevo_pt.naming_moe import MOE_NAMINGS
    from internevo_jax.checkpoint.internevo_pt.naming_zoo import ZOO_NAMINGS

    return (INTERNLM1, INTERNLM2, LLAMA2, *ZOO_NAMINGS, *MOE_NAMINGS)


def naming_for(family: str) -> Naming | None:
    """The InternEvo naming of a model family, or None when InternEvo's files of it are not read."""
    for naming in all_namings():
        if family in naming.families:
            return naming
    return None


def readable_families() -> list[str]:
    return sorted(f for n in all_namings() for f in n.families)
