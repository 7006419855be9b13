"""The train state on the device and the run counters on the host."""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import optax

from internevo_jax.optim import LossScaleState


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


def abstract_model_inputs(batch_rows: int, length: int):
    """ShapeDtypeStructs for model.init: ids, positions and segment ids of one micro-batch."""
    spec = jax.ShapeDtypeStruct((batch_rows, length), jax.numpy.int32)
    return spec, spec, spec


def create_train_state(
    model, tx: optax.GradientTransformation, scaler, mesh, rules, rng: jax.Array, seq_len: int
) -> tuple[TrainState, TrainState]:
    """Initialise params, optimizer and scaler state directly in their shardings on `mesh`.

    Returns (state, state_shardings). Parameters are placed by the logical-axis rules; optimizer
    moments follow their parameters; scalars are replicated.
    """
    import flax.linen as nn
    from jax.sharding import NamedSharding, PartitionSpec

    ids = jax.numpy.zeros((1, seq_len), jax.numpy.int32)

    def init_params(key):
        return model.init(key, ids, ids, ids + 1)["params"]

    boxed = jax.eval_shape(init_params, rng)
    logical_specs = nn.get_partition_spec(boxed)
    param_shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())

    abstract_params = nn.unbox(boxed)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_opt,
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    shardings = TrainState(
        params=param_shardings,
        opt_state=opt_shardings,
        loss_scale=jax.tree.map(lambda _: replicated, scaler.init()),
    )

    def init_all(key):
        params = nn.unbox(init_params(key))
        return TrainState(params=params, opt_state=tx.init(params), loss_scale=scaler.init())

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(init_all, out_shardings=shardings)(rng)
    return state, shardings
