"""Read the selected parts of one local checkpoint folder onto the target shardings (orbax restore)."""

from __future__ import annotations

import json
import os

import orbax.checkpoint as ocp
from etils import epath

from internevo_jax.checkpoint.content import (
    abstract_like,
    first_mismatch,
    named_shapes,
    optimizer_tree,
    restores_context,
)
from internevo_jax.checkpoint.errors import CheckpointError, first_line


def json_item(path: str, item: str) -> dict | None:
    """A JsonSave item (context, sampler, config) of the checkpoint folder `path`, or None."""
    # JsonSave writes the item as <item>/metadata; read it directly so a broken array item
    # cannot prevent reading the config that explains the breakage.
    try:
        with open(os.path.join(path, item, "metadata"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _config_diff(path: str, current_cfg: dict | None, shown: str) -> str:
    saved = json_item(path, "config")
    if not saved or not current_cfg:
        return ""
    before, now = saved.get("model") or {}, current_cfg.get("model") or {}
    diffs = [
        f"model.{k}: checkpoint {before.get(k)!r}, now {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    if saved.get("model_type") != current_cfg.get("model_type"):
        diffs.insert(
            0, f"model_type: checkpoint {saved.get('model_type')!r}, now {current_cfg.get('model_type')!r}"
        )
    return f" The saved config differs in {'; '.join(diffs[:6])}." if diffs else ""


def _check_lane_order(path: str, current_cfg: dict | None, shown: str) -> None:
    """CheckpointError when the checkpoint's q/k lane order (model.qk_interleaved) is not the
    config's: the shapes agree, so nothing else would notice the model computing wrong."""
    saved = json_item(path, "config")
    if not saved or not current_cfg:
        return
    before = (saved.get("model") or {}).get("qk_interleaved")
    now = (current_cfg.get("model") or {}).get("qk_interleaved")
    if before is not None and now is not None and bool(before) != bool(now):
        raise CheckpointError(
            f"The checkpoint at {shown} was trained with model.qk_interleaved={bool(before)}, but the config "
            f"sets model.qk_interleaved={bool(now)}: its q/k weight columns are in the other RoPE lane order, "
            f"so the loaded model would compute something else with the same shapes. Set "
            f"model.qk_interleaved={bool(before)} to continue this checkpoint (convert2hf / hf2internevo move "
            "between the two orders)."
        )


def _check_item(path: str, item: str, wanted_tree, shown: str, current_cfg: dict | None) -> None:
    try:
        meta = ocp.StandardCheckpointHandler().metadata(epath.Path(path) / item)
        saved = named_shapes(meta.tree)
    except Exception as err:  # orbax raises many types for unreadable metadata
        raise CheckpointError(
            f"The checkpoint at {shown} is corrupt or unreadable: its '{item}' item cannot be read "
            f"({first_line(err)}). Load an older checkpoint, or delete this one so that auto_resume "
            f"falls back to the previous complete one."
        ) from err
    problem = first_mismatch(saved, named_shapes(wanted_tree))
    if problem:
        what = "model" if item == "model" else "optimizer state"
        raise CheckpointError(
            f"The checkpoint at {shown} was saved from a different model: in its {what}, {problem}."
            f"{_config_diff(path, current_cfg, shown)} Load it with the model settings it was trained with, "
            f"or point ckpt.load_ckpt_info.path / ckpt.save_ckpt_folder at a checkpoint of this model."
        )


def read_checkpoint(
    path: str,
    *,
    state,
    shardings,
    content: frozenset[str],
    shown: str | None = None,
    current_cfg: dict | None = None,
) -> dict:
    """Restore from the local folder `path` the parts `content` selects.

    Returns a dict with some of: "model" (params), "optimizer" ({"opt_state", "loss_scale"}),
    "context" and "sampler" (dicts). Arrays come back in `shardings`, whatever mesh they were saved on.
    """
    shown = shown or path
    items = []
    if "model" in content:
        items.append("model")
    if content & {"optimizer", "scheduler"}:
        items.append("optimizer")
    if restores_context(content):
        items.append("context")
    if "sampler" in content:
        items.append("sampler")
    for item in items:
        if not os.path.isdir(os.path.join(path, item)):
            raise CheckpointError(
                f"The checkpoint at {shown} has no '{item}' part, so it cannot provide {sorted(content)}. "
                f'Load only what it holds (ckpt.load_ckpt_info content=("model",) for weights only), or '
                f"use another checkpoint."
            )

    targets = {}
    if "model" in items:
        _check_lane_order(path, current_cfg, shown)
        _check_item(path, "model", state.params, shown, current_cfg)
        targets["model"] = ocp.args.StandardRestore(abstract_like(state.params, shardings.params))
    if "optimizer" in items:
        tree = optimizer_tree(state)
        _check_item(path, "optimizer", tree, shown, current_cfg)
        targets["optimizer"] = ocp.args.StandardRestore(abstract_like(tree, optimizer_tree(shardings)))
    for item in ("context", "sampler"):
        if item in items:
            targets[item] = ocp.args.JsonRestore()

    try:
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            epath.Path(path), ocp.args.Composite(**targets)
        )
    except Exception as err:  # tensorstore/orbax raise ValueError, RuntimeError, OSError, ...
        raise CheckpointError(
            f"The checkpoint at {shown} is corrupt or unreadable: restoring {sorted(targets)} failed with "
            f"{first_line(err)}. Load an older checkpoint, or delete this one so that auto_resume falls "
            f"back to the previous complete one."
        ) from err
    return {k: restored[k] for k in targets}
