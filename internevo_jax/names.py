"""Names and small facts shared by every package, defined once.

This module imports nothing from the project, so config, model, parallel, data and trainer can
all import it. Change a name here and it changes everywhere.
"""

from __future__ import annotations

# -- mesh axes -------------------------------------------------------------------------------------
# Order matters: the last axis varies fastest over the device list, so "tensor" lands on
# neighbouring devices (same host / ICI ring) where its frequent collectives are cheapest, and
# "pipeline" / "data" (point-to-point and once-per-step traffic) span hosts.
PIPELINE = "pipeline"
DATA = "data"
EXPERT = "expert"  # expert parallelism: carved out of data parallelism (parallel.expert.size)
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (PIPELINE, DATA, EXPERT, FSDP, TENSOR)
# The batch is split over every data-parallel axis (the expert group and the ZeRO group "fsdp"
# are parts of data parallelism).
BATCH_AXES = (DATA, EXPERT, FSDP)

# -- logical axes of parameters ---------------------------------------------------------------------
VOCAB = "vocab"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
MLP = "mlp"
NORM = "norm"
LAYERS = "layers"  # the leading axis of stacked (scanned) layer weights
EXPERTS = "experts"  # the leading axis of stacked expert weights (mixture of experts)
EXPERT_MLP = "expert_mlp"  # an expert's MLP width
# The stacked routed-expert weights of an MoE layer, leaves of its params (model/moe/layer.py).
EXPERT_WEIGHT_NAMES = ("w1", "w2", "w3")
ROUTER = "router"  # the router's expert-score dimension (never split: every device routes its tokens)

# -- logical axes of activations --------------------------------------------------------------------
ACT_STAGE = "activation_stage"  # the stage axis of the pipeline schedule's buffers
ACT_BATCH = "activation_batch"
ACT_LENGTH = "activation_length"
ACT_EMBED_DIM = "activation_embed"
ACT_HEADS_DIM = "activation_heads"
ACT_KV_DIM = "activation_kv"
ACT_MLP_DIM = "activation_mlp"
ACT_VOCAB_DIM = "activation_vocab"

# The logical shapes of the large activations: [B, T, hidden], [B, T, heads, head_dim], ...
ACT_EMBED = (ACT_BATCH, ACT_LENGTH, ACT_EMBED_DIM)
ACT_HEADS = (ACT_BATCH, ACT_LENGTH, ACT_HEADS_DIM, ACT_KV_DIM)
ACT_MLP = (ACT_BATCH, ACT_LENGTH, ACT_MLP_DIM)
ACT_VOCAB = (ACT_BATCH, ACT_LENGTH, ACT_VOCAB_DIM)
# A pipeline buffer: [stages, micro-batch rows, T, hidden].
ACT_PIPELINE_STATE = (ACT_STAGE, ACT_BATCH, ACT_LENGTH, ACT_EMBED_DIM)

# -- model types ------------------------------------------------------------------------------------
# InternEvo model types of features this project does not implement, and what they are: refused by
# name, before any of their own config keys is checked.
UNSUPPORTED_MODEL_TYPES = {
    "LLAVA": "a vision-language model (image encoder + projector)",
    "CHAMELEON": "a mixed-modal (image token) model",
}


def unsupported_model_message(model_type: str) -> str:
    """Why `model_type` (a key of UNSUPPORTED_MODEL_TYPES) is refused."""
    return (
        f"model_type {model_type!r} is {UNSUPPORTED_MODEL_TYPES[model_type]}, which this project does not "
        "implement; it trains language models (docs/model.md lists them)."
    )


# -- labels -----------------------------------------------------------------------------------------
IGNORE_INDEX = -100  # a label that is not trained on (torch's CrossEntropyLoss default, as InternEvo)

# -- model option names -----------------------------------------------------------------------------
# "full": keep only a block's inputs (InternEvo's activation checkpointing); "save_matmuls": keep
# the outputs of the weight matmuls; "none": no rematerialisation even if checkpoint > 0.
REMAT_FULL = "full"
REMAT_POLICY_NAMES = (REMAT_FULL, "save_matmuls", "none")
RMSNORM = "rmsnorm"
NORM_TYPES = (RMSNORM, "layernorm")
# How the q/k/v projections are stored: three kernels wq/wk/wv; one fused wqkv laid out per kv
# group (each group's query heads, then its key head, then its value head: InternLM2); one fused
# wqkv holding all of q, then all of k, then all of v (Baichuan2's W_pack).
QKV_SEPARATE = "separate"
QKV_GROUPED = "grouped"
QKV_CONCAT = "concat"
QKV_LAYOUTS = (QKV_SEPARATE, QKV_GROUPED, QKV_CONCAT)
# The gated MLP's activation: SwiGLU (silu); GeGLU with exact gelu (InternEvo's use_swiglu=False);
# GeGLU with tanh-approximate gelu (HF's Gemma, which the released Gemma weights were trained with).
SILU = "silu"
GELU = "gelu"
GELU_TANH = "gelu_tanh"
MLP_ACTIVATIONS = (SILU, GELU, GELU_TANH)

# -- MLP width --------------------------------------------------------------------------------------
MLP_MULTIPLE_OF = 256  # InternEvo's default rounding of the SwiGLU width
# Tokens of each row per chunk of the fused head + cross-entropy (loss.ce_chunk_size): fp32 chunk
# logits of ~420 MB at a 103168 vocabulary; not tuned on a GPU yet.
CE_CHUNK_SIZE = 1024


def round_mlp_hidden_size(hidden_size: int, mlp_ratio: float, multiple_of: int = MLP_MULTIPLE_OF) -> int:
    """InternEvo's MLP width: int(hidden * ratio) rounded UP to a multiple of `multiple_of`.

    4096 * 8/3 = 10922.67 -> 10922 -> 11008 (the 7B model).
    """
    hidden = int(hidden_size * mlp_ratio)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


# -- run folder -------------------------------------------------------------------------------------
RUNS_ROOT = "runs"  # a run without `run_dir` writes to runs/<JOB_NAME>
