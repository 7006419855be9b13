"""Read Hugging Face safetensors weights into our params layout, shape-checked tensor by tensor."""

from __future__ import annotations

import logging

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.hf_config import hf_family, read_hf_config, rope_settings
from internevo_jax.checkpoint.hf_layout import HF_ARCHITECTURES, TensorMap, hf_order, tensor_map
from internevo_jax.checkpoint.hf_safetensors import read_tensors, weight_map

logger = logging.getLogger("internevo_jax")

# Buffers some exports carry that are not parameters (recomputed from the config).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def _bias_hint(hf_name: str, family: str) -> str:
    if not hf_name.endswith(".bias"):
        return ""
    if family == "INTERNLM2":
        return (
            " The HF config's \"bias\" and the model's no_bias setting disagree: set model.no_bias to match."
        )
    return (
        " The HF config's attention_bias and the model's biases disagree: InternLM1 (INTERNLM) has q/k/v/o "
        "biases (attention_bias=true); for a checkpoint without them use LLAMA2 or model.no_bias=True."
    )


def check_architecture(config: dict, family: str, source: str) -> None:
    """CheckpointError when the HF folder holds another architecture than the model's family."""
    theirs = hf_family(config, source)
    if (theirs == "INTERNLM2") != (family == "INTERNLM2"):
        arch = "InternLM2ForCausalLM" if theirs == "INTERNLM2" else "LlamaForCausalLM"
        fix = "INTERNLM2" if theirs == "INTERNLM2" else "LLAMA2 (or INTERNLM when it has attention biases)"
        raise CheckpointError(
            f"{source} holds a {arch} model, but model_type {family} is a {HF_ARCHITECTURES[family]}: its weights "
            f"cannot be loaded into this model. Set model_type={fix} and the model sizes of {source}/config.json "
            "(tools/hf2internevo.py prints them), or load a checkpoint of this architecture."
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


def read_params(
    source: str, family: str, expected: dict[tuple[str, ...], object]
) -> dict[tuple[str, ...], np.ndarray]:
    """{path: array in the leaf's dtype} for every expected leaf (anything with .shape and .dtype).

    Errors name the first tensor that is missing, extra or of another shape, with both shapes.
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
    extra = sorted(n for n in mapping if n not in maps and not n.endswith(_IGNORED_SUFFIXES))
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


def read_hf_folder(source: str) -> dict:
    """config.json of `source`, checked to be an architecture we read."""
    config = read_hf_config(source)
    hf_family(config, source)
    return config
