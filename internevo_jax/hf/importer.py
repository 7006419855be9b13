"""Read a Hugging Face model folder into our params layout, shape-checked tensor by tensor.

load_hf_params(path, cfg, abstract_params)   HF folder -> params tree shaped like abstract_params
                                             (what ckpt_type="hf" loads at training start)
import_hf(path, model_type=None)             HF folder -> (params, Config) with the model settings
                                             read from config.json (tools/hf2internevo.py)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.config import ModelConfig, config_from_dict
from internevo_jax.hf.config_json import model_settings, read_hf_config, rope_settings
from internevo_jax.hf.registry import mapping_for, mapping_of_config
from internevo_jax.hf.relayout import from_hf, split_experts
from internevo_jax.hf.shards import read_tensors, weight_map
from internevo_jax.hf.tensors import TensorMap, hf_order, restack, tensor_map, unrolled_leaves
from internevo_jax.model import abstract_params, build_model

logger = logging.getLogger("internevo_jax")

# Buffers some exports carry that are not parameters (recomputed from the config).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def _bias_hint(hf_name: str, family: str) -> str:
    return mapping_for(family).bias_hint if hf_name.endswith(".bias") else ""


def read_hf_folder(source: str) -> dict:
    """config.json of `source`, checked to be an architecture we read."""
    config = read_hf_config(source)
    mapping_of_config(config, source)
    return config


def check_architecture(config: dict, family: str, source: str) -> None:
    """CheckpointError when the HF folder holds another architecture than the model's family."""
    theirs, ours = mapping_of_config(config, source), mapping_for(family)
    if theirs is not ours:
        raise CheckpointError(
            f"{source} holds a {theirs.architecture} model, but model_type {family} is a {ours.architecture}: "
            f"its weights cannot be loaded into this model. Set model_type={theirs.model_type_hint} and the "
            f"model sizes of {source}/config.json (tools/hf2internevo.py prints them), or load a checkpoint "
            "of this architecture."
        )


def warn_on_setting_mismatch(config: dict, args, source: str) -> None:
    """Log settings that change the maths without changing any shape (RoPE, norm epsilon)."""
    theta, scaling = rope_settings(config)
    pairs = [
        ("rope_theta", theta, args.rope_base, "model.rope_base"),
        (
            "rms_norm_eps",
            float(config.get("rms_norm_eps", args.norm_eps)),
            args.norm_eps,
            "model.layer_norm_epsilon",
        ),
        ("rope_scaling (dynamic)", bool(scaling), args.dynamic_ntk, "model.use_dynamic_ntk_rope"),
    ]
    for hf_key, theirs, ours, key in pairs:
        if theirs != ours:
            logger.warning(
                "%s/config.json has %s=%s but the config sets %s=%s: the loaded model will not "
                "compute what the HF model computes unless that is intended",
                source,
                hf_key,
                theirs,
                key,
                ours,
            )


def hf_layout_model(model: Any) -> Any:
    """`model` with its attention stored as its family's HF class stores it (q/k/v layout, rotate-half
    lanes): the parameter shapes and paths an HF folder's tensors are read into."""
    layout = mapping_for(model.family).qkv_layout
    args = dataclasses.replace(model.args, qkv_layout=layout, qk_interleaved=False, scan_layers=False)
    return model.clone(args=args)


def read_model_params(source: str, model: Any) -> dict[tuple[str, ...], np.ndarray]:
    """The HF folder's weights as `model`'s unrolled {path: fp32 array}, moved into its layout."""
    canonical = hf_layout_model(model)
    # One expected leaf per HF tensor: an MoE layer's stacked experts are cut per expert.
    expected = split_experts(unrolled_leaves(abstract_params(canonical)), canonical.args)
    arrays = read_params(source, model.family, expected)
    return from_hf(arrays, model.args, mapping_for(model.family).qkv_layout)


def read_params(
    source: str, family: str, expected: dict[tuple[str, ...], object]
) -> dict[tuple[str, ...], np.ndarray]:
    """{path: array in the leaf's dtype} for every expected leaf (anything with .shape and .dtype).

    Errors name the first tensor that is missing, extra or of another shape, with both shapes. A
    model without a head (tied to the embedding) ignores an lm_head tensor, as transformers does.
    """
    mapping = weight_map(source)
    maps: dict[str, TensorMap] = {}
    for path in sorted(expected, key=hf_order):
        leaf = expected[path]
        m = tensor_map(family, path)
        if m.hf not in mapping:
            raise CheckpointError(
                f"The Hugging Face weights in {source} have no tensor '{m.hf}', which the model's '{m.dotted}' "
                f"(shape {tuple(leaf.shape)}) needs.{_bias_hint(m.hf, family)} Check model_type and the model "
                "settings against the HF config.json."
            )
        maps[m.hf] = m
    ignored = set()
    if not any(path[0] == "head" for path in expected):
        ignored.add(mapping_for(family).top.get(("head", "kernel")))
    extra = sorted(
        n for n in mapping if n not in maps and n not in ignored and not n.endswith(_IGNORED_SUFFIXES)
    )
    if extra:
        raise CheckpointError(
            f"The Hugging Face weights in {source} hold '{extra[0]}'"
            f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}, which this model has no place for."
            f"{_bias_hint(extra[0], family)} Check model_type and the model settings against the HF config.json."
        )
    out = {}
    for name, array in read_tensors(source, mapping, list(maps)):
        m = maps[name]
        leaf = expected[m.ours]
        if tuple(array.shape) != m.hf_shape(tuple(leaf.shape)):
            raise CheckpointError(
                f"Shape mismatch loading {source}: the HF tensor '{name}' has shape {tuple(array.shape)}, but the "
                f"model's '{m.dotted}' needs {m.hf_shape(tuple(leaf.shape))} (HF layout; {tuple(leaf.shape)} here). "
                "Check the model sizes in the config (hidden_size, heads, kv heads, mlp_ratio, vocab_size, "
                "num_layers) against the HF config.json."
            )
        out[m.ours] = m.from_hf(array).astype(np.dtype(leaf.dtype), copy=False)
    return out


def load_hf_params(path: str, cfg: Any, abstract_params: dict) -> dict:
    """The weights of the HF model folder `path` as a numpy params tree matching `abstract_params`.

    `abstract_params` is the model's params tree of ShapeDtypeStructs (unrolled or scan_layers);
    every array comes back in that leaf's shape and dtype. A folder of another architecture, a
    missing/extra tensor or a shape mismatch raises CheckpointError naming the tensor.
    """
    model = build_model(cfg)
    config = read_hf_folder(path)
    check_architecture(config, model.family, path)
    warn_on_setting_mismatch(config, model.args, path)
    arrays = read_model_params(path, model)
    like = unrolled_leaves(abstract_params)
    # Shape problems were named tensor by tensor above; this catches a config that builds another tree.
    arrays = {k: v.astype(np.dtype(like[k].dtype), copy=False) if k in like else v for k, v in arrays.items()}
    return restack(arrays, abstract_params)


def import_hf(path: str, model_type: str | None = None, *, dtype: str = "torch.bfloat16") -> tuple[dict, Any]:
    """(fp32 params, Config) from an HF folder; the Config holds the model settings of its config.json.

    `model_type` picks among the model types of the folder's layout (for LLaMA folders INTERNLM or
    LLAMA2; default: the family's choice from the attention biases); `dtype` is the compute dtype
    written into the config.
    """
    config = read_hf_folder(path)
    chosen, model, warnings = model_settings(config, path, model_type)
    for line in warnings:
        logger.warning(line)
    cfg = config_from_dict(
        {"model_type": chosen, "model": dict(model, dtype=dtype)}, f"{path}/config.json", log=lambda *a: None
    )
    built = build_model(cfg)
    check_architecture(config, built.family, path)
    return restack(read_model_params(path, built), abstract_params(built)), cfg


def describe_model(cfg: Any) -> str:
    """The model lines of a config file that reproduce `cfg`'s model (for the user to paste)."""
    m = cfg.model
    keys = (
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_kv_attention_heads",
        "head_dim",
        "vocab_size",
        "mlp_ratio",
        "multiple_of",
        "no_bias",
        "qkv_bias",
        "o_bias",
        "norm_type",
        "layer_norm_epsilon",
        "rope_base",
        "use_dynamic_ntk_rope",
        "max_position_embeddings",
        "apply_post_layer_norm",
        "tie_word_embeddings",
        "use_swiglu",
        "add_unit_offset",
        "qk_norm",
        "norm_head",
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
        "num_experts",
        "top_k",
        "moe_type",
        "moe_layer_kwargs",
        "num_shared_experts",
    )
    defaults = ModelConfig()
    # Keys left at their default are left out, except the sizes every config states.
    always = keys[:9]
    body = ",\n".join(
        f"    {k}={getattr(m, k)!r}" for k in keys if k in always or getattr(m, k) != getattr(defaults, k)
    )
    return f'model_type = "{cfg.model_type}"\nmodel = dict(\n{body},\n)'
