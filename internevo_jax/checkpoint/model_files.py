"""Read and write a model-only checkpoint in the trainer's on-disk layout, on one host's CPU.

    <folder>/model/       orbax StandardSave of the params tree (what TrainState.params holds)
    <folder>/config/      the resolved config as JSON (cfg.to_dict())
    <folder>/COMMITTED    the commit marker

`load_params` reads a checkpoint the trainer saved (a step folder, or a save folder: its newest
complete checkpoint); `save_params` writes one that `load_ckpt_info=dict(path=..., content=("model",))`
loads; `read_model` reads the `model/` item of any step folder. All run without a mesh: arrays
live on this process's first CPU device.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import numpy as np

from internevo_jax.checkpoint.errors import CheckpointError, first_line
from internevo_jax.checkpoint.files import LocalFiles
from internevo_jax.checkpoint.layout import MARKER, marker_text, scan
from internevo_jax.checkpoint.storage import LocalLocation


def _cpu_sharding():
    # this process's own CPU device: in a multi-process run jax.devices("cpu")[0] is process 0's
    return jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])


def resolve_checkpoint(path: str) -> str:
    """A complete checkpoint folder: `path` itself, or the newest complete one below it."""
    if os.path.isdir(os.path.join(path, "model")):
        if not os.path.exists(os.path.join(path, MARKER)):
            raise CheckpointError(
                f"The checkpoint at {path} is incomplete: it has no {MARKER} marker, so its save was "
                "interrupted. Convert an older, complete checkpoint instead."
            )
        return path
    if os.path.isdir(path):
        newest = scan(LocalFiles(), LocalLocation(os.path.abspath(path))).newest()
        if newest is not None:
            return newest.location.path
    raise CheckpointError(
        f"No checkpoint at {path}: point --src at a checkpoint step folder (<save_ckpt_folder>/<step>, "
        "holding model/ and COMMITTED) or at a save folder with complete checkpoints."
    )


def read_config_dict(folder: str) -> dict | None:
    """The config JSON saved with a checkpoint (None when it has none)."""
    try:
        with open(os.path.join(folder, "config", "metadata"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def config_from_saved(saved: dict, source: str):
    """A Config holding the saved model settings (model_type, model, use_fp32_norm)."""
    import dataclasses

    from internevo_jax.config import ModelConfig, config_from_dict

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model = {k: v for k, v in (saved.get("model") or {}).items() if k in fields}
    d = {
        "model_type": saved.get("model_type", "INTERNLM"),
        "model": model,
        "use_fp32_norm": bool(saved.get("use_fp32_norm", False)),
    }
    return config_from_dict(d, source, log=lambda *a: None)


def load_params(path: str, dtype: Any = None) -> tuple[dict, dict | None, str]:
    """(params as numpy, saved config dict or None, checkpoint folder) of a trainer checkpoint.

    `dtype` (e.g. jnp.bfloat16) casts while restoring, so a bf16 export of a large model never
    holds an fp32 copy.
    """
    folder = resolve_checkpoint(path)
    return read_model(folder, dtype), read_config_dict(folder), folder


def read_model(folder: str, dtype: Any = None) -> dict:
    """The params (numpy) of the `model/` item under `folder`, marker or not, read by this process alone.

    No other process takes part (orbax's restore barrier is limited to this one), so process 0 can
    call it from a background thread while the others train.
    """
    return read_item(folder, "model", dtype)


def read_item(folder: str, item: str, dtype: Any = None) -> dict:
    """One array item ("model" or "optimizer") of the checkpoint `folder` as a numpy tree, read by
    this process alone; named tuples come back as lists and dicts (the saved tree's structure)."""
    import orbax.checkpoint as ocp
    from etils import epath

    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    try:
        meta = (
            ocp.StandardCheckpointHandler(multiprocessing_options=alone)
            .metadata(epath.Path(folder) / item)
            .tree
        )
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), dtype or m.dtype, sharding=_cpu_sharding()),
            meta,
            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
        )
        handler = ocp.CompositeCheckpointHandler(
            composite_options=ocp.CompositeOptions(multiprocessing_options=alone)
        )
        restored = ocp.Checkpointer(handler, multiprocessing_options=alone).restore(
            epath.Path(folder), ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
        )[item]
    except Exception as err:  # orbax and tensorstore raise many types for unreadable data
        raise CheckpointError(
            f"The checkpoint at {folder} cannot be read ({first_line(err)}). Convert an "
            "older, complete checkpoint, or check that the folder was fully copied."
        ) from err
    return jax.tree.map(np.asarray, restored)


def save_params(path: str, params: dict, cfg: Any, *, overwrite: bool = False) -> str:
    """Write `params` (a params tree, numpy or jax arrays) as a model-only trainer checkpoint at `path`.

    The folder appears complete only at the end (orbax writes to a temporary name, the marker
    comes last). Returns `path`.
    """
    import orbax.checkpoint as ocp
    from etils import epath

    if os.path.exists(path):
        if not overwrite and os.listdir(path):
            raise CheckpointError(
                f"{path} already exists and is not empty. Choose a new folder, or pass "
                "--overwrite to replace it."
            )
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    device_params = jax.tree.map(lambda x: jax.device_put(np.asarray(x), _cpu_sharding()), params)
    saved_cfg = json.loads(json.dumps(cfg.to_dict(), default=str))
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    checkpointer.save(
        epath.Path(os.path.abspath(path)),
        ocp.args.Composite(model=ocp.args.StandardSave(device_params), config=ocp.args.JsonSave(saved_cfg)),
    )
    with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
        f.write(marker_text(0, "", ("model", "config")))
    return path
