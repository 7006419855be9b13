"""What `load_ckpt_info.content` selects, and how restored parts are merged into a fresh TrainState.

Scheduler state is not stored separately: the lr and beta2 schedules are functions of the optax
inject-hyperparams counter (opt_state[1].count and its per-schedule counts), so "scheduler" means
those counters and "optimizer" means the moments, the Adam step and the loss-scaler state.
"""

from __future__ import annotations

import jax

CONTENT_ALL = frozenset({"model", "sampler", "optimizer", "scheduler"})


def normalize_content(content) -> frozenset[str]:
    """Lower-cased content names; ("all",) is every part."""
    items = frozenset(str(c).lower() for c in (content or ("model",)))
    return CONTENT_ALL if "all" in items else items


def restores_context(content: frozenset[str]) -> bool:
    """InternEvo restores the step counters unless only the model is loaded (fine-tuning starts at 0)."""
    return content != frozenset({"model"})


def optimizer_tree(state) -> dict:
    """The optimizer item: optax state plus the loss-scaler state (InternEvo keeps both in its optimizer)."""
    return {"opt_state": state.opt_state, "loss_scale": state.loss_scale}


def abstract_like(tree, shardings):
    """ShapeDtypeStructs carrying the target shardings: restoring to them reshards on load."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _schedule_index(opt_state) -> int | None:
    # The inject_hyperparams state is the one with both `hyperparams` and `inner_state`.
    for i, part in enumerate(opt_state):
        if hasattr(part, "hyperparams") and hasattr(part, "inner_state"):
            return i
    return None


def with_schedule_from(opt_state, source):
    """`opt_state` with its schedule counters (everything of inject_hyperparams but the inner state) taken from `source`."""
    i = _schedule_index(opt_state)
    if i is None:
        return opt_state
    mine, theirs = opt_state[i], source[i]
    parts = (*opt_state[:i], theirs._replace(inner_state=mine.inner_state), *opt_state[i + 1 :])
    return type(opt_state)(*parts) if hasattr(opt_state, "_fields") else type(opt_state)(parts)


def path_name(path) -> str:
    """A dotted name for a pytree path, the same for dict keys, attributes and tuple indices."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def named_shapes(tree) -> dict[str, tuple]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(p): tuple(leaf.shape) for p, leaf in leaves}


def first_mismatch(saved: dict[str, tuple], wanted: dict[str, tuple]) -> str | None:
    """Describe the first difference between two {name: shape} maps, or None when they agree."""
    for name, shape in wanted.items():
        if name not in saved:
            return f"'{name}' (shape {shape}) is in the model but not in the checkpoint"
        if tuple(saved[name]) != tuple(shape):
            return (
                f"'{name}' has shape {tuple(saved[name])} in the checkpoint but {tuple(shape)} in the model"
            )
    for name, shape in saved.items():
        if name not in wanted:
            return f"'{name}' (shape {tuple(shape)}) is in the checkpoint but not in the model"
    return None
