"""Building a run from its config: the model (with its attention backend checked) and the Trainer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from internevo_jax.config import Config, ConfigError
from internevo_jax.data import type_names
from internevo_jax.model import attention_choice, build_model
from internevo_jax.monitor import logger
from internevo_jax.optim import DynamicLossScaler, build_optimizer
from internevo_jax.parallel import ParallelEnv, parallel_env
from internevo_jax.trainer.state import init_params, init_train_state
from internevo_jax.trainer.step import LossFn
from internevo_jax.trainer.trainer import Trainer


def create_model(cfg: Config) -> nn.Module:
    """The Flax module for cfg.model_type; an unknown type or an attention backend that cannot run
    here is a ConfigError naming the config file. Logs the attention backend and why it runs."""
    try:
        train = attention_choice(cfg, seq_len=cfg.data.packed_length)
        # Validation rows are seq_len windows whatever data.pack_sample_into_one says.
        valid = attention_choice(cfg, seq_len=cfg.data.packed_length, window_len=cfg.data.seq_len)
        model = build_model(cfg)
    except ValueError as err:
        raise ConfigError(f"{cfg.source_path or '<config>'}: {err}") from err
    logger.info(
        "model %s, compute dtype %s, attention backend %s: %s",
        cfg.model_type,
        np.dtype(cfg.model.compute_dtype).name,
        train.name,
        train.reason,
    )
    if cfg.data.valid_every > 0 and valid.reason != train.reason:
        logger.info("validation attention backend %s: %s", valid.name, valid.reason)
    return model


def build_trainer(
    cfg: Config,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: LossFn | None = None,
    grad_hook: Callable | None = None,
) -> Trainer:
    """Mesh, model, optimizer and a freshly initialised sharded train state, wrapped in a Trainer."""
    env = parallel_env(cfg, devices)
    mesh, rules = env.mesh, env.rules
    devices = list(mesh.devices.flat)
    logger.info(
        "mesh %s on %d %s device(s), %d process(es)",
        dict(mesh.shape),
        len(devices),
        devices[0].platform,
        jax.process_count(),
    )
    model = create_model(cfg)
    tx, lr_schedule, beta2_schedule = build_optimizer(cfg)
    params, param_shardings = init_params(model, mesh, rules, jax.random.key(cfg.seed), cfg.data.seq_len)
    return assemble_trainer(
        cfg,
        env,
        model,
        params,
        param_shardings,
        tx,
        lr_schedule=lr_schedule,
        beta2_schedule=beta2_schedule,
        loss_fn=loss_fn,
        grad_hook=grad_hook,
        type_names=tuple(type_names(cfg)),
    )


def assemble_trainer(
    cfg: Config,
    env: ParallelEnv,
    model: nn.Module,
    params,
    param_shardings,
    tx,
    *,
    lr_schedule=None,
    beta2_schedule=None,
    loss_fn: LossFn | None = None,
    grad_hook: Callable | None = None,
    type_names: Sequence[str] = (),
) -> Trainer:
    """A Trainer around existing parameters: the loss scaler from the config, the optimizer state
    built around `params` (placed in `param_shardings`), the compiled step."""
    scaler = DynamicLossScaler.from_config(cfg)
    state, shardings = init_train_state(params, param_shardings, tx, scaler, env.mesh)
    return Trainer(
        cfg,
        model=model,
        mesh=env.mesh,
        rules=env.rules,
        sizes=env.sizes,
        tx=tx,
        scaler=scaler,
        state=state,
        shardings=shardings,
        lr_schedule=lr_schedule,
        beta2_schedule=beta2_schedule,
        loss_fn=loss_fn,
        grad_hook=grad_hook,
        type_names=tuple(type_names),
    )
