"""Models (InternLM family), their layers, attention backends and the model registry.

model = build_model(cfg)          # model_type INTERNLM, INTERNLM2 (INTERNLM2_PUBLIC), INTERNLM3, LLAMA2
                                  # (LLAMA), QWEN2, QWEN3, GEMMA or BAICHUAN2 (docs/model.md); the
                                  # MoE types INTERNLM_MoE, MIXTRALMOE, QWEN2MOE, QWEN3MOE (docs/moe.md)
variables = model.init(rng, input_ids, positions, segment_ids)
logits = model.apply(variables, input_ids, positions, segment_ids)
"""

from internevo_jax.model.args import (
    INTERNEVO_02_INIT,
    INTERNLM_INIT,
    MOE_MODEL_TYPES,
    FamilyDefaults,
    InitStds,
    ModelArgs,
    check_supported,
)
from internevo_jax.model.attention import (
    attention_backend_name,
    attention_choice,
    backend_names,
    detect_platform,
    select_attention_backend,
)
from internevo_jax.model.baichuan2 import Baichuan2
from internevo_jax.model.block import Attention, DecoderBlock
from internevo_jax.model.causal_lm import CausalLM
from internevo_jax.model.gemma import Gemma
from internevo_jax.model.internlm import InternLM
from internevo_jax.model.internlm2 import InternLM2, InternLM3
from internevo_jax.model.internlm_moe import InternLMMoE
from internevo_jax.model.llama2 import Llama2
from internevo_jax.model.mixtral import Mixtral
from internevo_jax.model.moe.layer import MOE_COLLECTION, MoEFeedForward
from internevo_jax.model.moe.settings import MoEArgs
from internevo_jax.model.params import abstract_params, in_layout_of, is_scanned, stack_layers, unstack_layers
from internevo_jax.model.qwen import Qwen2, Qwen2Moe, Qwen3, Qwen3Moe
from internevo_jax.model.registry import (
    MODEL_REGISTRY,
    build_model,
    get_model_class,
    model_family,
    model_notes,
    register_model,
)
from internevo_jax.model.remat import REMAT_POLICIES
from internevo_jax.names import round_mlp_hidden_size

__all__ = [
    "INTERNEVO_02_INIT",
    "INTERNLM_INIT",
    "MODEL_REGISTRY",
    "MOE_COLLECTION",
    "MOE_MODEL_TYPES",
    "REMAT_POLICIES",
    "Attention",
    "Baichuan2",
    "CausalLM",
    "DecoderBlock",
    "FamilyDefaults",
    "Gemma",
    "InitStds",
    "InternLM",
    "InternLM2",
    "InternLM3",
    "InternLMMoE",
    "Llama2",
    "Mixtral",
    "MoEArgs",
    "MoEFeedForward",
    "Qwen2",
    "Qwen3",
    "Qwen2Moe",
    "Qwen3Moe",
    "ModelArgs",
    "abstract_params",
    "attention_backend_name",
    "attention_choice",
    "backend_names",
    "build_model",
    "check_supported",
    "detect_platform",
    "get_model_class",
    "in_layout_of",
    "is_scanned",
    "model_family",
    "model_notes",
    "register_model",
    "round_mlp_hidden_size",
    "select_attention_backend",
    "stack_layers",
    "unstack_layers",
]
