"""The train state on the device, the run counters on the host, and their sharded initialisation."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from internevo_jax.optim import DynamicLossScaler, LossScaleState
from internevo_jax.parallel.checks import check_layout
from internevo_jax.parallel.env import mesh_context
from internevo_jax.parallel.rules import master_axis_rules


@flax.struct.dataclass
class TrainState:
    """Everything the compiled step reads and writes: fp32 master params, optimizer and scaler state."""

    params: dict
    opt_state: optax.OptState
    loss_scale: LossScaleState

    @property
    def update_count(self) -> jax.Array:
        """Successful updates so far: the index the lr and beta2 schedules use."""
        return self.opt_state[1].count


@dataclasses.dataclass
class TrainContext:
    """Host-side counters, kept as Python ints so they never overflow int32 on long runs."""

    step: int = 0  # batches consumed (InternEvo's batch_count)
    num_consumed_tokens: int = 0
    inf_nan_skip_batches: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _init_fn(model: nn.Module, seq_len: int):
    ids = jnp.zeros((1, seq_len), jnp.int32)
    return lambda key: model.init(key, ids, ids, ids + 1)["params"]


def param_shardings(model: nn.Module, mesh: Mesh, rules, seq_len: int, *, master: bool = True):
    """NamedShardings of the model's parameters from their logical axes and the rules table.

    `master=True` (the default) gives the layout of the fp32 master copy kept in the train state
    (ZeRO-1: sharded over "fsdp", see parallel.master_axis_rules); False the compute layout.
    """
    boxed = jax.eval_shape(_init_fn(model, seq_len), jax.random.key(0))
    table = master_axis_rules(rules) if master else rules
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, table)


def check_model_layout(model: nn.Module, mesh: Mesh, rules, seq_len: int | None = None) -> None:
    """ConfigError when the model's dimensions cannot be split the way `rules` ask on `mesh`."""
    args = getattr(model, "args", None)
    if args is None:  # a custom module without ModelArgs: jit reports uneven shardings itself
        return
    shape = dict(mesh.shape)
    check_layout(args, shape, rules, seq_len=seq_len)
    check_layout(args, shape, master_axis_rules(rules))


def init_params(model: nn.Module, mesh: Mesh, rules, rng: jax.Array, seq_len: int) -> tuple[dict, dict]:
    """Initialise fp32 master parameters directly in their shardings; returns (params, shardings).

    The shardings are the master layout (`param_shardings`); the train step derives the compute
    layout from them. Raises ConfigError when the layout does not fit the model's dimensions.
    """
    check_model_layout(model, mesh, rules, seq_len)
    shardings = param_shardings(model, mesh, rules, seq_len)
    init = _init_fn(model, seq_len)
    with mesh_context(mesh, rules):
        params = jax.jit(lambda key: nn.unbox(init(key)), out_shardings=shardings)(rng)
    return params, shardings


def train_state_shardings(
    params, shardings: dict, tx: optax.GradientTransformation, scaler: DynamicLossScaler, mesh: Mesh
) -> TrainState:
    """Shardings of the whole train state: moments follow their parameter, scalars replicated.

    `params` may be real arrays or ShapeDtypeStructs (only shapes are read).
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_shardings = optax.tree_map_params(
        tx, lambda _, sharding: sharding, abstract_opt, shardings, transform_non_params=lambda _: replicated
    )
    return TrainState(
        params=shardings,
        opt_state=opt_shardings,
        loss_scale=jax.tree.map(lambda _: replicated, scaler.init()),
    )


def init_train_state(
    params: dict, shardings: dict, tx: optax.GradientTransformation, scaler: DynamicLossScaler, mesh: Mesh
) -> tuple[TrainState, TrainState]:
    """Optimizer and scaler state around `params`; moments follow their parameter's sharding.

    Returns (state, state_shardings). `params` is taken over (donated), not copied.
    """
    state_shardings = train_state_shardings(params, shardings, tx, scaler, mesh)
    build = jax.jit(
        lambda p: TrainState(params=p, opt_state=tx.init(p), loss_scale=scaler.init()),
        in_shardings=(shardings,),
        out_shardings=state_shardings,
        donate_argnums=(0,),
    )
    return build(params), state_shardings


def abstract_train_state(model, tx, scaler, mesh, rules, seq_len) -> tuple[TrainState, TrainState]:
    """The train state as ShapeDtypeStructs carrying their shardings: nothing is allocated.

    For ahead-of-time lowering (the memory plan); returns (abstract state, state shardings).
    """
    check_model_layout(model, mesh, rules, seq_len)
    shardings = param_shardings(model, mesh, rules, seq_len)
    params = nn.unbox(jax.eval_shape(_init_fn(model, seq_len), jax.random.key(0)))
    state_shardings = train_state_shardings(params, shardings, tx, scaler, mesh)
    shapes = jax.eval_shape(
        lambda p: TrainState(params=p, opt_state=tx.init(p), loss_scale=scaler.init()), params
    )
    state = jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes, state_shardings
    )
    return state, state_shardings


def create_train_state(model, tx, scaler, mesh, rules, rng, seq_len):
    """init_params followed by init_train_state: a fresh sharded train state and its shardings."""
    params, shardings = init_params(model, mesh, rules, rng, seq_len)
    return init_train_state(params, shardings, tx, scaler, mesh)
