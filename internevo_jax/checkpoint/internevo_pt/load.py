"""ckpt_type="internevo" on a folder of InternEvo's own .pt files: what `content` selects, read into
the train state's trees (placed in their shardings leaf by leaf) and the run's counters.

How InternEvo's run state maps onto ours:

* context.pt: batch_count is the index of the last batch trained, so our step (batches consumed)
  is batch_count + 1; step_count (successful updates) is the Adam step and the lr/beta2 schedules'
  position; num_consumed_tokens and inf_nan_skip_batches carry over;
* sampler.pt: our loader follows InternEvo's StaticBatchSampler as a function of the step, so the
  data position is that step; its seed and data-parallel size are checked against the config;
* schedulder.pt: the schedules are functions of step_count; its last_epoch is only checked;
* the optimizer's grad_scaler becomes our loss-scaler state.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
import optax

from internevo_jax.checkpoint.content import abstract_like
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.folder import CONTEXT, SAMPLER, SCHEDULER, load_pt
from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder
from internevo_jax.checkpoint.reading import Restored
from internevo_jax.hf.tensors import flatten, unflatten
from internevo_jax.model import build_model
from internevo_jax.optim.loss_scaler import LossScaleState

logger = logging.getLogger("internevo_jax")


def build_tree(abstract: dict, leaf) -> dict:
    """A params-shaped tree of jax arrays: `leaf(unrolled path)` per leaf, placed in the leaf's sharding
    one at a time (a scanned "layers" leaf stacks its layers first)."""
    out = {}
    for path, spec in flatten(abstract).items():
        if path[0] == "layers":
            array = np.stack([leaf((f"layers_{i}", *path[1:])) for i in range(spec.shape[0])])
        else:
            array = leaf(path)
        out[path] = jax.device_put(array.astype(spec.dtype), spec.sharding)
    return unflatten(out)


def _read_run_file(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    states = load_pt(path, tensors_only=False)
    if not isinstance(states, dict):
        raise CheckpointError(f"{path} holds a {type(states).__name__}, not InternEvo's dict.")
    return states


def read_context(folder: str) -> dict:
    """InternEvo's context.pt as our TrainContext fields plus the update count."""
    saved = _read_run_file(folder, CONTEXT)
    try:
        batch_count = int(saved["batch_count"])
        context = {
            "step": batch_count + 1,
            "num_consumed_tokens": int(saved["num_consumed_tokens"]),
            "inf_nan_skip_batches": int(saved["inf_nan_skip_batches"]),
        }
        updates = int(saved.get("step_count", batch_count + 1))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{folder}/{CONTEXT} lacks InternEvo's train-state field {e}; it is not a context.pt of InternEvo."
        ) from e
    return {**context, "update_count": updates}


def check_sampler(folder: str, cfg, dp_size: int | None) -> None:
    """Warn where sampler.pt was saved under another seed or data-parallel size than the config's."""
    if not os.path.exists(os.path.join(folder, SAMPLER)):
        return
    saved = _read_run_file(folder, SAMPLER)
    for key, ours, what in (
        ("seed", cfg.data.seed, "data.seed"),
        ("data_world_size", dp_size, "the data-parallel size"),
    ):
        if ours is not None and key in saved and saved[key] != ours:  # None: no loader (offline conversion)
            logger.warning(
                "%s/%s was saved with %s=%s but %s is %s here: the run continues at the same step with the "
                "batches of this setting",
                folder,
                SAMPLER,
                key,
                saved[key],
                what,
                ours,
            )


def check_scheduler(folder: str, update_count: int) -> None:
    if not os.path.exists(os.path.join(folder, SCHEDULER)):
        return
    saved = _read_run_file(folder, SCHEDULER)
    last = saved.get("last_epoch")
    if isinstance(last, int) and last != update_count:
        logger.info(
            "%s/%s: last_epoch=%s, context.pt step_count=%s; the lr and beta2 schedules continue at step_count",
            folder,
            SCHEDULER,
            last,
            update_count,
        )


def with_counts(opt_state, count: int):
    """`opt_state` with every step counter (Adam's, the schedules') set to `count`."""

    def set_count(path, leaf):
        if path and getattr(path[-1], "name", None) == "count":
            return jax.device_put(np.asarray(count, dtype=leaf.dtype), leaf.sharding)
        return leaf

    return jax.tree_util.tree_map_with_path(set_count, opt_state)


def with_adam_state(opt_state, mu, nu, count: int):
    """`opt_state` with the Adam moments `mu` / `nu` and every step counter set to `count`."""
    return with_counts(optax.tree_utils.tree_set(opt_state, mu=mu, nu=nu), count)


def loss_scale_state(grad_scaler: dict, like: LossScaleState) -> LossScaleState:
    """InternEvo's DynamicGradScaler state as ours (placed like `like`)."""
    try:
        values = (
            float(grad_scaler["_scale"]),
            int(grad_scaler["_growth_step"]),
            int(grad_scaler["_hysteresis_step"]),
        )
    except (KeyError, TypeError, ValueError):
        logger.warning(
            "the InternEvo optimizer files hold no dynamic grad-scaler state; keeping the initial scale"
        )
        return like
    return LossScaleState(
        *(jax.device_put(np.asarray(v, dtype=x.dtype), x.sharding) for v, x in zip(values, like))
    )


def read_internevo(
    folder: str, cfg, state, shardings, content: frozenset[str], dp_size: int | None
) -> Restored:
    """Read the parts `content` selects from the InternEvo folder into trees like `state`'s."""
    source = InternEvoFolder(folder, build_model(cfg))
    abstract = abstract_like(state.params, shardings.params)
    wants_optimizer = bool(content & {"optimizer"})
    params = opt_state = loss_scale = None
    if wants_optimizer:
        optimizer = source.optimizer()
        # The fp32 master weights are the parameters InternEvo trains on (the model shards are casts).
        params = build_tree(abstract, lambda path: source.leaf(path, optimizer.field("master")))
        mu = build_tree(abstract, lambda path: source.leaf(path, optimizer.field("exp_avg")))
        nu = build_tree(abstract, lambda path: source.leaf(path, optimizer.field("exp_avg_sq")))
        step = optimizer.scalars["adam_step"]
        opt_state = with_adam_state(state.opt_state, mu, nu, step)
        loss_scale = loss_scale_state(optimizer.scalars["grad_scaler"], state.loss_scale)
        logger.info("read the InternEvo optimizer state (Adam step %d) from %s", step, folder)
    elif "model" in content:
        params = build_tree(abstract, source.leaf)
    context = None
    if content != frozenset({"model"}):
        context = read_context(folder)
        updates = context.pop("update_count")
        check_scheduler(folder, updates)
        if "scheduler" in content:  # without "optimizer" only the schedule counters are taken from it
            opt_state = with_counts(opt_state if opt_state is not None else state.opt_state, updates)
        if "sampler" in content:
            check_sampler(folder, cfg, dp_size)
    sampler = {"step": context["step"]} if context is not None and "sampler" in content else None
    return Restored(
        content=content,
        params=params,
        opt_state=opt_state,
        loss_scale=loss_scale,
        context=context,
        sampler=sampler,
    )
