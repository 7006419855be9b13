"""InternEvo's state-dict names of the mixture-of-experts families: INTERNLM_MoE, MIXTRAL, QWEN2MOE, QWEN3MOE.

The same format as naming.py (`Entry`, `ExpertEntry`, `Naming`, split kinds there). Read from
InternEvo's own modules: modeling_moe.py (Internlm1MoE), modeling_mixtral.py (MixtralMoE),
modeling_qwen2_moe.py (Qwen2Moe), modeling_qwen3_moe.py (Qwen3Moe), moe/moe.py (MoEBase, MoE,
Qwen2MoE), moe/base_layer.py + moe/experts.py (`experts.wrapped_experts`), moe/gshard_layer.py and
moe/dropless_layer.py (TopKGate's `wg`, the experts they build), modules/mlp.py (FeedForward,
GroupedFeedForward), modules/linear.py + core/parallel/shard.py (which Linear cuts what),
checkpoint/components.py (try_save_moe_checkpoint / try_load_moe_checkpoint) and
tools/moe_group_ckpt_converter.py. None of the four model files has a working load_hf_weights or
convert_internevo2hf_weights (all raise NotImplementedError), so there is no converter to read.

Every MoE layer of these families is one MoE module (`mlp` in the InternLM1-style models, whose
decoder list is `blocks`; `feed_forward` in the Qwen ones, under `layers`) holding:

* `moe_layer.gate.wg.weight`, the router, (experts, hidden): a plain torch.nn.Linear without bias
  in both TopKGate classes (GShard and Dropless), never tensor split, kept in float32
  (set_fp32_attr_to_module); it stays in the model shard (get_non_moe_state_dict keeps names with
  "moe_layer.gate").
* `moe_layer.experts.wrapped_experts.{k}.w1/w2/w3.weight`, the routed experts: every name holding
  "expert" (other than the gate) leaves the model shard for model_moe_layer{l}_expert{e}_tp{t}.pt
  (`_wp{w}` under isp), {e} the global index of wrapped expert k (ep_rank * local + k, renamed so
  in the key too), {l} = pp_rank * (num_layers // pipeline size) + the MoE layer's index on its
  stage (the key's own layer index is the stage's local one). Experts are FeedForward modules
  built with is_expert=True: w1 (gate) and w3 (up) ColumnParallelLinear, w2 (down) RowParallelLinear
  over the tensor group (mtp/msp/fsp); with parallel.expert.no_tp=True they are not split and
  only _tp0 files are written; under isp each is cut over the expert-weight-parallel group.
* with num_shared_experts > 0 (InternEvo's older `moe_use_residual`: one), the shared experts
  `residual_mlp.w1/w2/w3.weight` (a FeedForward of width hidden_features * num_shared_experts, cut
  like the dense MLP, in the model shard: "residual_mlp" holds no "expert") and `coefficient`:
  Linear(hidden, 2) with bias, softmax-mixed, in MoE (INTERNLM_MoE, MIXTRAL); Linear(hidden, 1,
  bias=False), a sigmoid gate, in Qwen2MoE (QWEN2MOE, QWEN3MOE). Plain torch Linears: replicated.

Layouts of the routed experts. The ExpertEntry tables here are InternEvo's *list* layout
(moe_layer_kwargs use_grouped_mlp=False): experts is a ModuleList of FeedForward, one file per
global expert, each matrix a torch (out, in) weight. InternEvo's current GShardMoELayer and
DroplessMoELayer default to use_grouped_mlp=True and none of the shipped configs
(7B_MoE4_sft, 8x7B_mixtral, 57B_qwen2_MoE: moe_type "GShard"; qwen3_30B_A3B: "Dropless") turns
it off, so their checkpoints are *grouped*: wrapped_experts holds one GroupedFeedForward, the
files are model_moe_layer{l}_expert{r}_tp{t}.pt with r the expert-parallel rank, and the key (the
same names as below with {e} = r) holds the rank's local experts stacked as [E / ep, in, out]
(already our orientation, not transposed); grouped linears refuse tensor parallelism, and under
isp GroupedWPLinear saves the 2-D [E / ep * in, out] cut by rows over the expert-weight-parallel
group. InternEvo's tools/moe_group_ckpt_converter.py (--convert-mode 1) turns grouped files into
the list layout read with these tables. Checkpoints from before InternEvo's MoE refactor
(Jan 2024) name the experts `moe_layer.experts.experts.{e}` and, like InternLM1's dense MLP then,
hold w2 = up (column) and w3 = down (row); those names are not listed. MegaBlock and
MegaBlock-Dropless store their experts differently and are not covered.
"""

from __future__ import annotations

from internevo_jax.checkpoint.internevo_pt.naming import (
    COLUMN,
    INTERNLM1,
    REPLICATED,
    ROW,
    Entry,
    ExpertEntry,
    Naming,
    layer_path,
    linear,
)
from internevo_jax.checkpoint.internevo_pt.naming_zoo import QWEN2, QWEN3
from internevo_jax.names import QKV_CONCAT, QKV_SEPARATE


def _without_mlp(dense: Naming) -> tuple[Entry, ...]:
    """A dense family's layer entries other than its MLP's (attention and norms, in their order)."""
    return tuple(e for e in dense.layer if e.ours[1] != "feed_forward")


def _moe_entries(prefix: str, coefficient_bias: bool) -> tuple[Entry, ...]:
    """The router and shared experts of the MoE module at `prefix` (holding "{i}"), in registration order.

    Entries for the shared experts apply only with num_shared_experts > 0 (reader.py skips the
    ones our tree lacks).
    """
    coefficient = layer_path("feed_forward", "coefficient")
    entries = [
        Entry(f"{prefix}.moe_layer.gate.wg.weight", layer_path("feed_forward", "gate"), REPLICATED),
        *linear(f"{prefix}.residual_mlp.w1", layer_path("feed_forward", "shared_experts", "w1"), COLUMN),
        *linear(f"{prefix}.residual_mlp.w2", layer_path("feed_forward", "shared_experts", "w2"), ROW),
        *linear(f"{prefix}.residual_mlp.w3", layer_path("feed_forward", "shared_experts", "w3"), COLUMN),
        Entry(f"{prefix}.coefficient.weight", (*coefficient, "kernel"), REPLICATED),
    ]
    if coefficient_bias:
        entries.append(Entry(f"{prefix}.coefficient.bias", (*coefficient, "bias"), REPLICATED))
    return tuple(entries)


def _dense_mlp(prefix: str) -> tuple[Entry, ...]:
    """The FeedForward every one of these decoders builds instead when num_experts <= 1."""
    return (
        *linear(f"{prefix}.w1", layer_path("feed_forward", "w1"), COLUMN),
        *linear(f"{prefix}.w2", layer_path("feed_forward", "w2"), ROW),
        *linear(f"{prefix}.w3", layer_path("feed_forward", "w3"), COLUMN),
    )


def _experts(prefix: str) -> tuple[ExpertEntry, ...]:
    """The routed experts of the MoE module at `prefix`, list layout (w1 gate, w3 up, w2 down)."""
    experts = f"{prefix}.moe_layer.experts.wrapped_experts.{{e}}"
    return (
        ExpertEntry(f"{experts}.w1.weight", layer_path("feed_forward", "w1"), COLUMN),
        ExpertEntry(f"{experts}.w2.weight", layer_path("feed_forward", "w2"), ROW),
        ExpertEntry(f"{experts}.w3.weight", layer_path("feed_forward", "w3"), COLUMN),
    )


# modeling_moe.py: Internlm1MoE (embedding, blocks of Internlm1MoEDecoder, norm, head). The
# decoder is InternLM1's: mha.MHA (fused wqkv, bias=True, out_bias=True) whose state-dict hooks
# (internlm1_mha_save_convert) save it as `Wqkv`, with out_proj, norm1 and norm2 — the same
# tensors as naming.INTERNLM1 — and `mlp` an MoE (softmax coefficient with bias).
INTERNLM_MOE = Naming(
    families=("INTERNLM_MoE",),
    layers_prefix="blocks",
    first=INTERNLM1.first,
    layer=(
        *_without_mlp(INTERNLM1),  # Wqkv (weight, bias), out_proj (weight, bias), norm1, norm2
        *_moe_entries("blocks.{i}.mlp", coefficient_bias=True),
        *_dense_mlp("blocks.{i}.mlp"),
    ),
    last=INTERNLM1.last,
    qkv_layout=QKV_CONCAT,
    aliases=INTERNLM1.aliases,
    experts=_experts("blocks.{i}.mlp"),
)

# modeling_mixtral.py: MixtralMoE (embedding, blocks of MixtralMoEDecoder, norm, head), InternLM1
# names around mha.SWA: `mixer` with separate wq/wk/wv (bias qkv_bias, True by default,
# configs/8x7B_mixtral.py sets False) and wo (bias o_bias, False by default), all cut like
# LLaMA's; norm1 / norm2; `mlp` an MoE (softmax coefficient with bias). The embedding is always
# Embedding1D (no word_embeddings variant).
MIXTRAL = Naming(
    families=("MIXTRAL",),
    layers_prefix="blocks",
    first=INTERNLM1.first,
    layer=(
        *linear("blocks.{i}.mixer.wq", layer_path("attention", "wq"), COLUMN, bias=True),
        *linear("blocks.{i}.mixer.wk", layer_path("attention", "wk"), COLUMN, bias=True),
        *linear("blocks.{i}.mixer.wv", layer_path("attention", "wv"), COLUMN, bias=True),
        *linear("blocks.{i}.mixer.wo", layer_path("attention", "wo"), ROW, bias=True),
        Entry("blocks.{i}.norm1.weight", layer_path("attention_norm", "scale"), REPLICATED),
        Entry("blocks.{i}.norm2.weight", layer_path("ffn_norm", "scale"), REPLICATED),
        *_moe_entries("blocks.{i}.mlp", coefficient_bias=True),
        *_dense_mlp("blocks.{i}.mlp"),
    ),
    last=INTERNLM1.last,
    qkv_layout=QKV_SEPARATE,
    experts=_experts("blocks.{i}.mlp"),
)

# modeling_qwen2_moe.py: Qwen2Moe (embed_tokens, layers of Qwen2MoeDecoder, norm, output): Qwen2's
# names (naming_zoo.QWEN2: mha.SWA `attention` with wq/wk/wv/wo, attention_norm, ffn_norm) and
# `feed_forward` a Qwen2MoE (sigmoid coefficient, no bias). configs/57B_qwen2_MoE.py: GShard, 64
# experts, 8 shared.
QWEN2MOE = Naming(
    families=("QWEN2MOE",),
    layers_prefix="layers",
    first=QWEN2.first,
    layer=(
        *_without_mlp(QWEN2),  # wq, wk, wv, wo (weight, bias), attention_norm, ffn_norm
        *_moe_entries("layers.{i}.feed_forward", coefficient_bias=False),
        *_dense_mlp("layers.{i}.feed_forward"),
    ),
    last=QWEN2.last,
    qkv_layout=QKV_SEPARATE,
    aliases=QWEN2.aliases,
    experts=_experts("layers.{i}.feed_forward"),
)

# modeling_qwen3_moe.py: Qwen3Moe, Qwen2Moe's names with SWA(use_qk_norm=True, head_dim=...)
# adding the q_norm / k_norm RMSNorms over head_dim (names as in naming_zoo.QWEN3: not in the
# mha.py versions read, so unconfirmed); `feed_forward` a Qwen2MoE, which the decoder asserts is
# Dropless (configs/qwen3_30B_A3B.py: 128 experts, no shared ones, isp, expert_weight size 2).
QWEN3MOE = Naming(
    families=("QWEN3MOE",),
    layers_prefix="layers",
    first=QWEN2.first,
    layer=(
        *_without_mlp(QWEN3),  # wq, wk, wv, wo (weight, bias), q_norm, k_norm, attention_norm, ffn_norm
        *_moe_entries("layers.{i}.feed_forward", coefficient_bias=False),
        *_dense_mlp("layers.{i}.feed_forward"),
    ),
    last=QWEN3.last,
    qkv_layout=QKV_SEPARATE,
    aliases=QWEN3.aliases,
    experts=_experts("layers.{i}.feed_forward"),
)

MOE_NAMINGS: tuple[Naming, ...] = (INTERNLM_MOE, MIXTRAL, QWEN2MOE, QWEN3MOE)
