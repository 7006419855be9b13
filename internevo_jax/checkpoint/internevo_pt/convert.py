"""Offline conversion of our checkpoints into InternEvo checkpoint folders (tools/jax2internevo.py;
the other way, tools/internevo2jax.py reads with load.py and saves with the trainer's manager).

Going back to InternEvo writes what its checkpoint manager writes: the model shards in the
compute dtype, the hybrid-ZeRO optimizer files (fp32 master weights and Adam moments), context.pt,
sampler.pt (the data position: epoch, packs consumed in it and the RNG state before the epoch's
shuffle, from our loader's schedule) and schedulder.pt.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.folder import import_torch
from internevo_jax.checkpoint.internevo_pt.reader import internevo_tensors, naming_of
from internevo_jax.checkpoint.internevo_pt.writer import (
    OptimizerState,
    TargetLayout,
    check_layout,
    write_folder,
)
from internevo_jax.checkpoint.restore import json_item

logger = logging.getLogger("internevo_jax")


def _find_adam(tree):
    """The saved Adam state ({"count", "mu", "nu"}) inside a saved optax state of lists and dicts."""
    if isinstance(tree, dict):
        if {"count", "mu", "nu"} <= set(tree):
            return tree
        children = tree.values()
    elif isinstance(tree, (list, tuple)):
        children = tree
    else:
        return None
    for child in children:
        found = _find_adam(child)
        if found is not None:
            return found
    return None


def _data_position(sampler: dict, step: int) -> dict:
    """InternEvo's sampler fields at our loader `step` (our schedule follows its StaticBatchSampler)."""
    from internevo_jax.data.sampler import BatchSchedule

    if "num_packs" not in sampler:
        return {}
    schedule = BatchSchedule(
        sampler["num_packs"],
        micro_num=sampler["micro_num"],
        dp_size=sampler["dp_size"],
        seed=sampler["seed"],
        rampup_batch_size=sampler.get("rampup_batch_size", ""),
    )
    slot = schedule.locate(step)
    schedule.permutation(slot.epoch)
    return {
        "batch_size": sampler["micro_num"],
        "raw_rampup_batch_size": sampler.get("rampup_batch_size") or None,
        "rng_state": schedule._rng_states[slot.epoch],
        "epoch": slot.epoch,
        "seed": sampler["seed"],
        "data_world_size": sampler["dp_size"],
        "num_consumed_samples_in_epoch": slot.start,
        "batch_count": step,
        "indices": None,
    }


def check_target(tgt: str) -> None:
    """Refuse an output folder that already holds files (nothing is overwritten)."""
    if os.path.exists(tgt) and (not os.path.isdir(tgt) or os.listdir(tgt)):
        raise CheckpointError(
            f"{tgt} already exists and is not empty; choose a new folder or remove it first."
        )


def checkpoint_to_internevo(
    src: str, tgt: str, layout: TargetLayout, config_path: str | None = None
) -> list[str]:
    """Write our checkpoint `src` (a step folder or a save folder) as an InternEvo folder `tgt`."""
    from internevo_jax.checkpoint.model_files import (
        config_from_saved,
        read_config_dict,
        read_item,
        resolve_checkpoint,
    )
    from internevo_jax.config import load_config
    from internevo_jax.model import build_model

    torch = import_torch()
    folder = resolve_checkpoint(src)
    saved = read_config_dict(folder)
    if config_path:
        cfg = load_config(config_path, log=lambda *a: None)
    elif saved is not None:
        cfg = config_from_saved(saved, f"{folder}/config")
    else:
        raise CheckpointError(
            f"{folder} holds no saved config; pass --config with the run's training config."
        )
    model = build_model(cfg)
    naming = naming_of(model)
    check_layout(layout, model.args)
    check_target(tgt)
    params = read_item(folder, "model")
    master = internevo_tensors(params, model)
    optimizer = None
    updates = 0
    if naming.experts:
        logger.warning(
            "%s is an MoE model: its optimizer state is not written (InternEvo keeps the experts' in "
            "expert-data parameter groups); InternEvo starts the moments afresh",
            model.family,
        )
    elif os.path.isdir(os.path.join(folder, "optimizer")):
        saved_opt = read_item(folder, "optimizer")
        adam = _find_adam(saved_opt["opt_state"])
        if adam is None:
            raise CheckpointError(f"{folder}/optimizer holds no Adam moments (mu, nu) to write.")
        updates = int(adam["count"])
        scale = saved_opt.get("loss_scale") or {}
        optimizer = OptimizerState(
            master=master,
            exp_avg=internevo_tensors(adam["mu"], model),
            exp_avg_sq=internevo_tensors(adam["nu"], model),
            step=updates,
            grad_scaler={
                "_scale": float(scale.get("scale", 1.0)),
                "_growth_step": int(scale.get("growth_step", 0)),
                "_hysteresis_step": int(scale.get("hysteresis_step", 0)),
            },
            lr=float(cfg.adam.lr),
            betas=(float(cfg.adam.adam_beta1), float(cfg.adam.adam_beta2)),
            eps=float(cfg.adam.adam_eps),
            weight_decay=float(cfg.adam.weight_decay),
        )
    context = json_item(folder, "context") or {}
    step = int(context.get("step", 0))
    position = _data_position(json_item(folder, "sampler") or {}, step)
    if not position:
        logger.warning("%s records no data settings: sampler.pt is not written", folder)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        np.dtype(cfg.model.compute_dtype).name, torch.float32
    )
    partial = f"{tgt.rstrip('/')}.partial"  # the folder appears complete or not at all
    shutil.rmtree(partial, ignore_errors=True)
    written = write_folder(
        partial,
        naming,
        model.args.num_layers,
        master,
        layout,
        dtype=dtype,
        optimizer=optimizer,
        context={
            "batch_count": step - 1,
            "num_consumed_samples_in_epoch": position.get("num_consumed_samples_in_epoch", 0),
            "num_consumed_tokens": int(context.get("num_consumed_tokens", 0)),
            "inf_nan_skip_batches": int(context.get("inf_nan_skip_batches", 0)),
            "step_count": updates,
            "tensorboard_folder": None,
        },
        sampler=position or None,
        scheduler={
            "base_lrs": [float(cfg.adam.lr)],
            "last_epoch": updates,
            "_step_count": updates + 1,
        },
    )
    if os.path.isdir(tgt):
        os.rmdir(tgt)  # empty (check_target)
    os.replace(partial, tgt)
    return written
