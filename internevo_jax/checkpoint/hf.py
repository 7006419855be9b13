"""Hugging Face import and export.

    load_hf_params(path, cfg, abstract_params)   HF folder -> params tree shaped like abstract_params
                                                 (the trainer's ckpt_type="hf" hook)
    import_hf(path, model_type=None)             HF folder -> (params, Config) with the model settings
                                                 read from config.json (tools/hf2internevo.py)
    export_hf(params, cfg, target, ...)          params -> HF folder (tools/convert2hf.py)

Layouts: INTERNLM and LLAMA2 <-> LlamaForCausalLM (attention_bias for InternLM1's biases),
INTERNLM2 <-> InternLM2ForCausalLM. docs/hf.md has the name mapping.
"""

from __future__ import annotations

import logging
from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.hf_config import model_settings
from internevo_jax.checkpoint.hf_export import export_hf
from internevo_jax.checkpoint.hf_import import (
    check_architecture,
    read_hf_folder,
    read_params,
    warn_on_setting_mismatch,
)
from internevo_jax.checkpoint.hf_layout import restack, unrolled_leaves

logger = logging.getLogger("internevo_jax")

__all__ = ["CheckpointError", "describe_model", "export_hf", "import_hf", "load_hf_params"]


def load_hf_params(path: str, cfg: Any, abstract_params: dict) -> dict:
    """The weights of the HF model folder `path` as a numpy params tree matching `abstract_params`.

    `abstract_params` is the model's params tree of ShapeDtypeStructs (unrolled or scan_layers);
    every array comes back in that leaf's shape and dtype. A folder of another architecture, a
    missing/extra tensor or a shape mismatch raises CheckpointError naming the tensor.
    """
    from internevo_jax.model import build_model, model_family

    family = model_family(cfg.model_type)
    config = read_hf_folder(path)
    check_architecture(config, family, path)
    warn_on_setting_mismatch(config, build_model(cfg).args, path)
    arrays = read_params(path, family, unrolled_leaves(abstract_params))
    return restack(arrays, abstract_params)


def import_hf(path: str, model_type: str | None = None, *, dtype: str = "torch.bfloat16") -> tuple[dict, Any]:
    """(fp32 params, Config) from an HF folder; the Config holds the model settings of its config.json.

    `model_type` picks INTERNLM vs LLAMA2 for LLaMA-architecture folders (default: INTERNLM when
    the attention has biases, else LLAMA2); `dtype` is the compute dtype written into the config.
    """
    from internevo_jax.config import config_from_dict
    from internevo_jax.model import abstract_params, build_model

    config = read_hf_folder(path)
    chosen, model, warnings = model_settings(config, path, model_type)
    for line in warnings:
        logger.warning(line)
    cfg = config_from_dict(
        {"model_type": chosen, "model": dict(model, dtype=dtype)}, f"{path}/config.json", log=lambda *a: None
    )
    built = build_model(cfg)
    abstract = abstract_params(built)
    check_architecture(config, built.family, path)
    arrays = read_params(path, built.family, unrolled_leaves(abstract))
    return restack(arrays, abstract), cfg


def describe_model(cfg: Any) -> str:
    """The model lines of a config file that reproduce `cfg`'s model (for the user to paste)."""
    m = cfg.model
    keys = (
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_kv_attention_heads",
        "vocab_size",
        "mlp_ratio",
        "multiple_of",
        "no_bias",
        "norm_type",
        "layer_norm_epsilon",
        "rope_base",
        "use_dynamic_ntk_rope",
        "max_position_embeddings",
        "apply_post_layer_norm",
    )
    body = ",\n".join(f"    {k}={getattr(m, k)!r}" for k in keys)
    return f'model_type = "{cfg.model_type}"\nmodel = dict(\n{body},\n)'
