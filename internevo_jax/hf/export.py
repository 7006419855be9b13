"""Write a params tree as a Hugging Face model folder (config.json, sharded safetensors, tokenizer),
atomically: everything goes to a temporary sibling folder that is renamed into place at the end."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import numpy as np

from internevo_jax.checkpoint.content import first_mismatch
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.config.units import parse_size
from internevo_jax.hf.config_json import hf_config
from internevo_jax.hf.registry import mapping_for
from internevo_jax.hf.relayout import to_hf
from internevo_jax.hf.shards import write_sharded
from internevo_jax.hf.tensors import hf_order, tensor_map, unrolled_leaves
from internevo_jax.hf.tokenizer import write_tokenizer
from internevo_jax.model import abstract_params, build_model, model_family

logger = logging.getLogger("internevo_jax")

EXPORT_DTYPES = ("bf16", "fp32", "fp16")


def numpy_dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype({"bf16": ml_dtypes.bfloat16, "fp32": np.float32, "fp16": np.float16}[name])


def unrolled_shapes(tree: dict) -> dict[str, tuple]:
    """{dotted path: shape} of a params tree in the unrolled layout (scanned trees are cut per layer)."""
    return {".".join(path): tuple(leaf.shape) for path, leaf in unrolled_leaves(tree).items()}


def check_params_fit(params: dict, model, source: str) -> None:
    """CheckpointError when `params` are not the parameters of `model` (config and weights disagree)."""
    problem = first_mismatch(unrolled_shapes(params), unrolled_shapes(abstract_params(model)))
    if problem:
        raise CheckpointError(
            f"The weights in {source} do not fit the model their config describes: {problem}. "
            "Pass --config with the settings the checkpoint was trained with."
        )


def _plan(cfg: Any, dtype: str) -> tuple:
    """(model, family, mapping, aux_loss_coef) of the model `cfg` describes; CheckpointError when
    transformers has no class for it or its config.json cannot express it."""
    model = build_model(cfg)
    family = model_family(cfg.model_type)
    mapping = mapping_for(family)
    aux_loss_coef = cfg.loss.moe_loss_coeff if model.args.moe is not None else None
    # What the class cannot express is refused before any tensor is named (tokenizer ids come later).
    hf_config(model.args, family, dtype=dtype, aux_loss_coef=aux_loss_coef)
    return model, family, mapping, aux_loss_coef


def check_exportable(cfg: Any, dtype: str = "bf16") -> None:
    """CheckpointError when the model `cfg` describes cannot be written as a Hugging Face folder."""
    _plan(cfg, dtype)


def _replace_folder(tmp: str, target: str, overwrite: bool) -> None:
    if os.path.exists(target):
        if os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        elif not overwrite:
            raise CheckpointError(
                f"{target} already exists. Choose a new folder, or pass --overwrite to replace it."
            )
        else:
            old = f"{target}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
            return
    os.replace(tmp, target)


def export_hf(
    params: dict,
    cfg: Any,
    target: str,
    *,
    dtype: str = "bf16",
    max_shard_size: str | int = "5GB",
    tokenizer: str | None = None,
    remote_code: str | None = None,
    overwrite: bool = False,
    source: str = "the checkpoint",
) -> dict:
    """Write `params` (unrolled or scanned tree) of the model `cfg` describes to `target`; returns config.json."""
    if dtype not in EXPORT_DTYPES:
        raise CheckpointError(f"--dtype {dtype!r} is not one of {', '.join(EXPORT_DTYPES)}.")
    if os.path.exists(target) and not overwrite and not (os.path.isdir(target) and not os.listdir(target)):
        raise CheckpointError(
            f"{target} already exists. Choose a new folder, or pass --overwrite to replace it."
        )
    max_bytes = parse_size(max_shard_size)
    model, family, mapping, aux_loss_coef = _plan(cfg, dtype)
    check_params_fit(params, model, source)
    leaves = to_hf(unrolled_leaves(params), model.args, mapping.qkv_layout)
    maps = {
        tensor_map(family, path).hf: (tensor_map(family, path), leaves[path])
        for path in sorted(leaves, key=hf_order)
    }
    out_dtype = numpy_dtype(dtype)

    parent = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(target))}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        special = write_tokenizer(tokenizer, tmp, mapping) if tokenizer else None
        config = hf_config(model.args, family, dtype=dtype, special_ids=special, aux_loss_coef=aux_loss_coef)
        write_sharded(
            tmp,
            list(maps),
            nbytes=lambda name: int(np.prod(maps[name][1].shape)) * out_dtype.itemsize,
            load=lambda name: maps[name][0].to_hf(np.asarray(maps[name][1]).astype(out_dtype)),
            max_bytes=max_bytes,
        )
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
        with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as f:
            json.dump(generation, f, indent=2)
            f.write("\n")
        if remote_code:
            _copy_remote_code(remote_code, tmp)
        elif mapping.remote_code_note:
            logger.warning(mapping.remote_code_note, target)
        _replace_folder(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


def _copy_remote_code(folder: str, target: str) -> None:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".py")) if os.path.isdir(folder) else []
    if not names:
        raise CheckpointError(
            f"--remote_code {folder} holds no .py files. Point it at a folder with the model's "
            "modeling code (e.g. configuration_internlm2.py and modeling_internlm2.py of a released InternLM2 model)."
        )
    for name in names:
        shutil.copyfile(os.path.join(folder, name), os.path.join(target, name))
