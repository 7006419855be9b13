"""Read the selected parts of one local checkpoint folder onto the target shardings (orbax restore)."""

from __future__ import annotations

import json
import os
import re

import orbax.checkpoint as ocp
from etils import epath

from internevo_jax.checkpoint.content import (
    abstract_like,
    first_mismatch,
    named_shapes,
    optimizer_tree,
    restores_context,
)
from internevo_jax.checkpoint.errors import CheckpointError, cause_chain, first_line
from internevo_jax.checkpoint.failures import quiet_closed_loop_callbacks

# TensorStore's error texts: the file or OCDBT key it failed on, and the parts never shown to a user
# (the repr of the TensorStore object, the whole spec).
_TS_DETAILS = re.compile(r"\s*See full TensorStore details:.*", re.S)
_TS_SPEC = re.compile(r"\s*\[tensorstore_spec='.*?'\]", re.S)
_OCDBT_KEY = re.compile(r'"([^"]+)" in OCDBT database at local file "([^"]+)"')
_LOCAL_FILE = re.compile(r'local file "([^"]+)"')
_NOT_FOUND = re.compile(r"File (\S+?) not found")
_NO_METADATA = re.compile(r"Metadata file \(named (\S+)\) does not exist at (\S+?)\.?(?:\s|$)")


def _relative(path: str, file: str) -> str:
    rel = os.path.relpath(file, path) if os.path.isabs(file) else file
    return rel.replace(os.sep, "/") + ("/" if file.endswith("/") and not rel.endswith("/") else "")


def _clean(text: str, path: str) -> str:
    """The first line of a TensorStore/orbax error without object reprs or specs, paths relative to `path`."""
    text = _TS_SPEC.sub("", _TS_DETAILS.sub("", text))
    text = text.split("[tensorstore_spec=", 1)[0].strip()
    text = text.splitlines()[0].strip() if text else ""
    text = text.replace(path.rstrip("/") + "/", "")
    return text if len(text) <= 300 else text[:297] + "..."


def _damage(err: BaseException, path: str, item: str | None = None) -> tuple[str, str]:
    """(what is damaged, why) for a failed read of the checkpoint folder `path`: the file relative to
    `path` where the error names one, else the array and its item's folder, else the item."""
    chain = list(cause_chain(err))
    if item is not None and any(isinstance(x, json.JSONDecodeError) for x in chain):
        bad = next(x for x in chain if isinstance(x, json.JSONDecodeError))
        return f"the file {item}/_METADATA", f"not valid JSON: {first_line(bad)}"
    texts = [str(x) for x in chain]
    named = [t for t in texts if _OCDBT_KEY.search(t) or _LOCAL_FILE.search(t) or _NOT_FOUND.search(t)]
    named += [t for t in texts if _NO_METADATA.search(t)]
    plain = [t for t in reversed(texts) if len(_clean(t, path)) > 12]
    text = named[0] if named else (plain[0] if plain else texts[0])
    why = _clean(text, path) or type(chain[-1]).__name__
    files = [f for f in _LOCAL_FILE.findall(text) if not f.endswith("/")]
    if (m := _NOT_FOUND.search(text)) is not None:
        files.append(m.group(1))
    if (m := _NO_METADATA.search(text)) is not None:
        files.append(os.path.join(m.group(2), m.group(1)))
    if files:
        return f"the file {_relative(path, files[-1])}", why
    if (m := _OCDBT_KEY.search(text)) is not None:
        array, folder = m.group(1).split("/", 1)[0], _relative(path, m.group(2))
        return f"the array {array} stored under {folder} (a file there is missing or truncated)", why
    if item is not None:
        return f"its '{item}' item ({item}/)", why
    return "one of its files", why


def _damaged(shown: str, what: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint at {shown} is corrupt or unreadable: {what} cannot be read ({why}). Resume from "
        f"an earlier checkpoint (ckpt.auto_resume=False and ckpt.load_ckpt_info.path set to an earlier "
        f"<step> folder), or delete this checkpoint folder so that auto_resume falls back to the "
        f"previous complete one."
    )


def _check_json_item(path: str, item: str, shown: str) -> None:
    """The JsonSave item `item` (context, sampler) must be a whole JSON file: name it otherwise."""
    file = os.path.join(path, item, "metadata")
    try:
        with open(file, encoding="utf-8") as f:
            json.load(f)
    except FileNotFoundError as err:
        raise _damaged(shown, f"the file {item}/metadata", "it is missing") from err
    except (OSError, ValueError) as err:
        why = f"not valid JSON: {first_line(err)}" if isinstance(err, ValueError) else first_line(err)
        raise _damaged(shown, f"the file {item}/metadata", why) from err


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
        what, why = _damage(err, path, item)
        raise _damaged(shown, what, why) from err
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
            _check_json_item(path, item, shown)
            targets[item] = ocp.args.JsonRestore()

    quiet_closed_loop_callbacks()  # a failed read's late TensorStore callbacks are noise after its error
    try:
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            epath.Path(path), ocp.args.Composite(**targets)
        )
    except Exception as err:  # tensorstore/orbax raise ValueError, RuntimeError, OSError, ...
        what, why = _damage(err, path)
        raise _damaged(shown, what, why) from err
    return {k: restored[k] for k in targets}
