"""InternEvo's state-dict names of the dense Qwen2, Qwen3, InternLM3, Gemma and Baichuan2 families.

The same format as naming.py (`Entry` / `Naming`, split kinds there). Read from InternEvo's own
modules: the model files' `__init__` (which module holds which tensor), their `load_hf_weights`
(HF name -> InternEvo name, and the dimension each rank's shard is cut from: dim 0 for q/k/v, w1,
w3 and the head, dim 1 for wo / out_proj and w2, the hidden dimension of the embedding) and
`convert_internevo2hf_weights` (the inverse, concatenating the ranks' shards on the same dims);
modules/mha.py (GQA / SWA / MHA), modules/mlp.py (FeedForward), modules/embedding.py
(Embedding1D), modules/linear.py and core/parallel/shard.py (`new_linear` names wq/wk/wv/wqkv/
w1/w3 column-parallel, wo/out_proj/w2 row-parallel, output the vocab-parallel head).

Shared by every family here:

* the MLP is FeedForward: w1 = gate (HF gate_proj), w3 = up (up_proj), w2 = down (down_proj),
  out = w2(act(w1 x) * w3 x). With mlp_layer_fusion InternEvo holds one fused_w1_w3 but its
  state-dict hook saves it back as w1 / w3, so checkpoints hold w1 / w3 either way. FeedForward
  can carry biases (Qwen2's mlp_bias); our tree has no MLP biases, so they are not listed.
* norms are RMSNorm `weight`s, replicated; the final norm is absent with apply_post_layer_norm.
* a bias listed here exists only when the config turns it on (no_bias / qkv_bias / o_bias); a
  row-parallel layer's bias is replicated.
* the head is `output.weight` whenever the module is built with last=True: InternEvo never ties
  it. Our tree has no ("head", "kernel") leaf when the model ties its head
  (tie_word_embeddings=True, GEMMA's default): such a checkpoint's output.weight has no place there.
"""

from __future__ import annotations

from internevo_jax.checkpoint.internevo_pt.naming import (
    COLUMN,
    EMBEDDING,
    HEAD,
    INTERNLM2,
    QKV_THREE,
    REPLICATED,
    ROW,
    Entry,
    Naming,
    layer_path,
    linear,
)
from internevo_jax.names import QKV_CONCAT, QKV_SEPARATE

_NORM = Entry("norm.weight", ("norm", "scale"), REPLICATED)
_OUTPUT = Entry("output.weight", ("head", "kernel"), HEAD)

# attention_norm / ffn_norm and the gated MLP (FeedForward, modules registered w1, w2, w3): the
# same names in every family here, and InternLM2's.
_NORMS_AND_MLP = INTERNLM2.layer[4:]

# Separate q/k/v (GQA with enable_qkv_fusion=False, or SWA): each rank holds whole heads of each,
# rows cut over tensor; wo's input columns cut over tensor.
_SEPARATE_QKV_WO = (
    *linear("layers.{i}.attention.wq", layer_path("attention", "wq"), COLUMN, bias=True),
    *linear("layers.{i}.attention.wk", layer_path("attention", "wk"), COLUMN, bias=True),
    *linear("layers.{i}.attention.wv", layer_path("attention", "wv"), COLUMN, bias=True),
    *linear("layers.{i}.attention.wo", layer_path("attention", "wo"), ROW, bias=True),
)

# modeling_qwen2.py: Qwen2 (embed_tokens, layers of Qwen2Decoder, norm, output). Its attention is
# mha.SWA: separate wq/wk/wv with bias qkv_bias (True by default), wo with bias o_bias (False by
# default). InternEvo's converter also takes a checkpoint whose embedding is `tok_embeddings.weight`.
QWEN2 = Naming(
    families=("QWEN2",),
    layers_prefix="layers",
    first=(Entry("embed_tokens.weight", ("embedding", "embedding"), EMBEDDING),),
    layer=(*_SEPARATE_QKV_WO, *_NORMS_AND_MLP),
    last=(_NORM, _OUTPUT),
    qkv_layout=QKV_SEPARATE,
    aliases=(("tok_embeddings.weight", "embed_tokens.weight"),),
)

# InternEvo has no dense Qwen3 model type: its Qwen3 is modeling_qwen3_moe.py (model_type
# QWEN3MOE), whose Qwen3MoeDecoder builds the dense FeedForward above when num_experts <= 1 and
# otherwise matches Qwen2's names, with SWA(use_qk_norm=True, head_dim=...) adding one RMSNorm
# over head_dim for q and one for k, shared by every head (so replicated). The names q_norm /
# k_norm are not in the InternEvo mha.py versions read here (those predate use_qk_norm); they come
# from a fork of InternEvo's mha.py that has the same SWA(use_qk_norm) signature: unconfirmed.
# qkv_bias defaults to True in that file; Qwen3's released weights have none.
QWEN3 = Naming(
    families=("QWEN3",),
    layers_prefix="layers",
    first=QWEN2.first,
    layer=(
        *_SEPARATE_QKV_WO,
        Entry("layers.{i}.attention.q_norm.weight", layer_path("attention", "q_norm", "scale"), REPLICATED),
        Entry("layers.{i}.attention.k_norm.weight", layer_path("attention", "k_norm", "scale"), REPLICATED),
        *_NORMS_AND_MLP,
    ),
    last=(_NORM, _OUTPUT),
    qkv_layout=QKV_SEPARATE,
    aliases=QWEN2.aliases,
)

# InternEvo registers INTERNLM3 to the InternLM2 model class (registry.py), so the names are
# InternLM2's (tok_embeddings, output), and configs/8B_internlm3.py sets enable_qkv_fusion=False:
# GQA then holds separate wq/wk/wv, and load_hf_weights (is_internlm3) fills exactly those from
# q_proj/k_proj/v_proj, each cut on dim 0. GQA gives wq/wk/wv/wo one bias switch (not no_bias;
# the 8B config has no_bias=True). A run with enable_qkv_fusion=True holds InternLM2's grouped
# wqkv instead: that checkpoint reads with naming.INTERNLM2.
INTERNLM3 = Naming(
    families=("INTERNLM3",),
    layers_prefix="layers",
    first=(Entry("tok_embeddings.weight", ("embedding", "embedding"), EMBEDDING),),
    layer=(*_SEPARATE_QKV_WO, *_NORMS_AND_MLP),
    last=(_NORM, _OUTPUT),
    qkv_layout=QKV_SEPARATE,
    aliases=(("tok_embeddings.word_embeddings.weight", "tok_embeddings.weight"),),
)

# modeling_gemma.py: Gemma (embed_tokens, layers of GemmaDecoder, norm, output). GQA with
# enable_qkv_fusion=False (wq/wk/wv/wo, bias = not no_bias), head_dim apart from hidden / heads;
# the norms' add_unit_offset changes the arithmetic, not the names. The head is untied:
# load_hf_weights copies HF's embedding into output.weight when there is no lm_head, so a GEMMA
# model of ours with its default tied head has no leaf for output.weight. With use_glu=False
# GemmaDecoder builds flash-attn's ParallelFusedMLP (fc1 / fc2) instead of w1/w2/w3: our tree has
# no place for that MLP.
GEMMA = Naming(
    families=("GEMMA",),
    layers_prefix="layers",
    first=QWEN2.first,
    layer=(*_SEPARATE_QKV_WO, *_NORMS_AND_MLP),
    last=(_NORM, _OUTPUT),
    qkv_layout=QKV_SEPARATE,
    aliases=QWEN2.aliases,
)

# modeling_baichuan2.py: Baichuan2 (tok_embeddings, layers of Baichuan2Decoder, norm, output with
# norm_head: the stored weight is the raw one, normalised in the forward). Its attention is mha.MHA
# with enable_qkv_fusion=True (wqkv, bias = not no_bias) and out_bias=False (out_proj, no bias).
# MHA reads each rank's wqkv output as (3, its heads, head_dim), so the global tensor interleaves
# the ranks' q, k and v blocks (QKV_THREE; one rank, or isp's gathered weight, is plain
# [q; k; v] = HF's W_pack). InternEvo's own load_hf_weights / convert_internevo2hf_weights cut and
# join W_pack as plain contiguous rows instead, which agrees with the forward only on one tensor
# rank (or isp). MHA has no separate kv heads (num_kv_heads = num_heads).
BAICHUAN2 = Naming(
    families=("BAICHUAN2",),
    layers_prefix="layers",
    first=INTERNLM3.first,
    layer=(
        *linear("layers.{i}.attention.wqkv", layer_path("attention", "wqkv"), QKV_THREE, bias=True),
        *linear("layers.{i}.attention.out_proj", layer_path("attention", "wo"), ROW),
        *_NORMS_AND_MLP,
    ),
    last=(_NORM, _OUTPUT),
    qkv_layout=QKV_CONCAT,
    aliases=(("embed_tokens.weight", "tok_embeddings.weight"),),
)

ZOO_NAMINGS: tuple[Naming, ...] = (QWEN2, QWEN3, INTERNLM3, GEMMA, BAICHUAN2)
