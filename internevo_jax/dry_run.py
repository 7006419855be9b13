"""The dry run: an ahead-of-time memory plan of the train step for N devices, nothing allocated.

`python -m internevo_jax.train --config=C --dry-run (--devices N | --topology v5p:4x4x4)
[--device-memory 80GB]` lowers and compiles the real train step for a mesh of N devices from
abstract inputs only (ShapeDtypeStructs with their shardings: a 7B model is never materialised)
and prints what one device holds: fp32 master parameters, optimizer state, activations and
temporaries, and whether that fits.

* `--devices N`: N CPU stand-ins, so the plan runs on a laptop before a launch; the attention
  dispatcher is asked for backends for its memory-plan target (`MEMORY_PLAN_PLATFORM`), which
  compile on CPU but hold attention memory as a fused kernel does.
* `--topology NAME`: the abstract devices of a TPU slice (libtpu, parallel/topology.py): the real
  TPU compiler and its buffer assignment, with the TPU attention backend (Splash) in the program.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from internevo_jax.config import Config, ConfigError
from internevo_jax.config.units import parse_size
from internevo_jax.model.attention.dispatch import MEMORY_PLAN_PLATFORM, attention_choice
from internevo_jax.parallel import ParallelEnv, batch_sharding, mesh_context, parallel_env, replicated
from internevo_jax.parallel.zero import compute_dtypes, compute_shardings

GiB = 1024**3
# LLVM optimisation only changes generated code, not buffer assignment, and dominates CPU compile time.
_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}
BATCH_KEYS = ("input_ids", "labels", "positions", "segment_ids", "type_ids")


def parse_memory(text: str) -> int:
    """'80GB' -> 80e9 bytes, '80GiB' -> 80 * 2**30, '85899345920' -> bytes."""
    try:
        return parse_size(text)
    except ValueError:
        raise ConfigError(f"--device-memory={text!r} is not a size like 80GB, 80GiB or 96e9.") from None


def use_cpu_devices(count: int) -> None:
    """Make jax start with `count` CPU devices; must run before anything touches a backend."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if jax.device_count() == count and jax.default_backend() == "cpu":
            return
        raise RuntimeError(
            f"the dry run needs {count} CPU devices, but jax already started with {jax.device_count()} "
            f"{jax.default_backend()} device(s); run it in a fresh process (python -m internevo_jax.train "
            "--dry-run ...)"
        )
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", count)


def _shard_bytes(shape_dtype, sharding) -> int:
    local = sharding.shard_shape(shape_dtype.shape)
    return int(np.prod(local, dtype=np.int64)) * np.dtype(shape_dtype.dtype).itemsize


def _tree_bytes(tree, shardings) -> int:
    return sum(_shard_bytes(x, s) for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


@dataclasses.dataclass
class MemoryPlan:
    """Per-device bytes of one compiled train step."""

    job: str
    devices: int
    device_kind: str  # "CPU stand-in", or the devices' own kind, e.g. "TPU v5 lite"
    mesh: dict
    attention: str  # the attention backend compiled into the step
    params: int  # fp32 master copy (train state), exact
    optimizer: int  # AdamW moments and counters (train state), exact
    gradients: int  # the fp32 gradient accumulator
    gathered: int  # the compute copy of the weights (compute dtype, compute layout)
    activations: int  # activations and workspace of one micro-batch, in the compute dtype
    other: int  # loss-scaler state, the batch, outputs that are not donated, program code
    compiled_temporaries: int  # the compiler's temp buffers, as compiled (before any scaling)
    device_memory: int | None
    notes: list[str]
    # True when the compiler is the target device's own (a TPU topology, the GPUs present): its
    # temporaries are then the plan's, gradients and the gathered copy are parts of them.
    device_compiler: bool = False

    @property
    def temporaries(self) -> int:
        if self.device_compiler:
            return self.compiled_temporaries
        return self.gradients + self.gathered + self.activations

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.temporaries + self.other

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.total <= self.device_memory

    def report(self) -> str:
        g = lambda b: f"{b / GiB:9.2f} GiB"  # noqa: E731
        mesh = " ".join(f"{k}={v}" for k, v in self.mesh.items())
        lines = [
            f"memory plan for {self.job} on {self.devices} {self.device_kind} devices (mesh {mesh}), "
            f"attention {self.attention}, per device:",
            f"  parameters (fp32 master copy)       {g(self.params)}",
            f"  optimizer state (AdamW moments)     {g(self.optimizer)}",
        ]
        if self.device_compiler:
            lines += [
                f"  temporaries (compiler's buffers)    {g(self.temporaries)}",
                f"    in them: gradients (fp32)         {g(self.gradients)}",
                f"    in them: weights for compute      {g(self.gathered)} at most",
            ]
        else:
            lines += [
                f"  gradients (fp32 accumulator)        {g(self.gradients)}",
                f"  weights gathered for compute       {g(self.gathered)}",
                f"  activations and temporaries         {g(self.activations)}",
            ]
        lines += [
            f"  batch, loss scaler, program code    {g(self.other)}",
            f"  total                               {g(self.total)}",
        ]
        if self.device_memory is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            margin = self.device_memory - self.total
            lines.append(
                f"  device memory                       {g(self.device_memory)}: {verdict} "
                f"({'headroom' if margin >= 0 else 'short by'} {abs(margin) / GiB:.2f} GiB)"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _plan_config(cfg: Config, platform: str) -> tuple[Config, float, list[str]]:
    """The config the plan compiles, the factor from its activation bytes to the real ones, and
    notes on what it changed."""
    notes, model = [], cfg.model
    if not model.scan_layers and model.checkpoint_layers in (0, model.num_layers):
        # One scanned layer compiles in seconds where 32 unrolled ones take minutes on CPU; both
        # keep the same residuals per layer.
        model = dataclasses.replace(model, scan_layers=True)
        notes.append(
            "compiled with model.scan_layers=True (one layer body, the same residuals per layer) to keep "
            "the plan fast; unrolled layers can differ by a few per-layer buffers"
        )
    itemsize = np.dtype(cfg.model.compute_dtype).itemsize
    scale = 1.0
    if itemsize < 4 and platform == "cpu":
        # XLA:CPU widens 16-bit arithmetic into extra fp32 buffers that a GPU/TPU never holds, so
        # activations are measured in fp32 and scaled to the compute dtype.
        model = dataclasses.replace(model, dtype="torch.float32")
        scale = itemsize / 4
        notes.append(
            f"activations measured with fp32 compute on the stand-in CPU devices and scaled to "
            f"{np.dtype(cfg.model.compute_dtype).name} (x{scale:g}); the few fp32 buffers of the real "
            "step (norm statistics, softmax, loss) are under-counted by that factor"
        )
    return dataclasses.replace(cfg, model=model), scale, notes


def _copy_bytes(params, dtypes, compute) -> int:
    """Bytes per device of the compute copy: leaves cast or re-laid-out for the layers."""

    def one(x, dtype, sharding):
        if dtype in (None, x.dtype) and sharding == x.sharding:
            return 0  # used as it is: no separate copy
        return _shard_bytes(jax.ShapeDtypeStruct(x.shape, dtype or x.dtype), sharding)

    return sum(jax.tree.leaves(jax.tree.map(one, params, dtypes, compute)))


@dataclasses.dataclass
class LoweredStep:
    """The train step lowered ahead of time for some devices, with what it was built from."""

    lowered: jax.stages.Lowered
    env: ParallelEnv
    model: Any
    state: Any  # the abstract train state (ShapeDtypeStructs with shardings)
    shardings: Any
    attention: Any  # the dispatcher's Choice for the model's attention

    def compile(self) -> jax.stages.Compiled:
        platform = self.env.mesh.devices.flat[0].platform
        return self.lowered.compile(_COMPILER_OPTIONS.get(platform))


def lower_step(cfg: Config, devices: Sequence[jax.Device], *, attention_platform: str | None = None):
    """Lower the train step of `cfg` for a mesh over `devices` from abstract inputs only.

    `attention_platform` is the platform the attention backend is selected for (default: the
    devices' own, so abstract TPU devices get the TPU kernel). An attention backend that cannot
    run there is a ConfigError.
    """
    from internevo_jax.model import build_model
    from internevo_jax.optim import DynamicLossScaler, build_optimizer
    from internevo_jax.trainer.state import abstract_train_state
    from internevo_jax.trainer.step import make_train_step

    devices = list(devices)
    attention_platform = attention_platform or devices[0].platform
    env = parallel_env(cfg, devices)
    mesh, rules = env.mesh, env.rules
    try:
        choice = attention_choice(cfg, attention_platform, seq_len=cfg.data.packed_length)
    except ValueError as err:
        raise ConfigError(f"{cfg.source_path or '<config>'}: {err}", key="model.attn_impl") from None
    model = build_model(cfg)
    model = model.clone(args=dataclasses.replace(model.args, platform=attention_platform))
    tx, lr_schedule, beta2_schedule = build_optimizer(cfg)
    scaler = DynamicLossScaler.from_config(cfg)
    state, shardings = abstract_train_state(model, tx, scaler, mesh, rules, cfg.data.seq_len)
    step = make_train_step(
        model,
        tx,
        scaler,
        mesh,
        rules,
        shardings,
        label_smoothing=cfg.loss.label_smoothing,
        matmul_precision=cfg.model.matmul_precision,
        ce_chunk_size=cfg.loss.ce_chunk_size,
        moe_loss_coeff=cfg.loss.moe_loss_coeff,
        schedules=(lr_schedule, beta2_schedule),
    )
    shape = (cfg.data.micro_num, env.sizes.dp, cfg.data.packed_length)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding(mesh)) for k in BATCH_KEYS}
    index = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated(mesh))  # abstract: no device array
    with mesh_context(mesh, rules, cfg.model.matmul_precision):
        lowered = step.jitted.lower(state, batch, index)
    return LoweredStep(lowered, env, model, state, shardings, choice)


# The TPU compiler refuses a program whose temporaries exceed the chip's memory, with this message.
_OUT_OF_MEMORY = re.compile(
    r"required for HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)"
)


def _refused_for_memory(err: Exception) -> tuple[int, int] | None:
    """(temporaries, available) bytes from a compiler's out-of-memory refusal, else None."""
    match = _OUT_OF_MEMORY.search(str(err))
    if match is None:
        return None
    unit = lambda u: 1024 ** "KMGT".index(u) * 1024  # noqa: E731 - binary units, as the compiler prints them
    return int(float(match[1]) * unit(match[2])), int(float(match[3]) * unit(match[4]))


def plan_memory(
    cfg: Config, devices: Sequence[jax.Device] | None = None, *, device_memory: int | None = None
) -> MemoryPlan:
    """Compile the train step of `cfg` for `devices` from abstract inputs and measure it."""
    from internevo_jax.model import build_model

    devices = list(jax.devices() if devices is None else devices)
    real_args = build_model(cfg).args
    platform = devices[0].platform
    plan_cfg, scale, notes = _plan_config(cfg, platform)
    # The CPU stand-ins only run XLA attention, whose backward would keep every layer's
    # [heads, T, T] probabilities: tens of GiB a fused kernel never stores. Select for the plan's
    # target instead.
    step = lower_step(
        plan_cfg, devices, attention_platform=MEMORY_PLAN_PLATFORM if platform == "cpu" else None
    )
    state, shardings, rules, sizes = step.state, step.shardings, step.env.rules, step.env.sizes
    params = _tree_bytes(state.params, shardings.params)
    optimizer = _tree_bytes(state.opt_state, shardings.opt_state)
    compute = compute_shardings(shardings.params, rules)
    gathered = _copy_bytes(state.params, compute_dtypes(state.params, real_args), compute)
    kind = "CPU stand-in" if platform == "cpu" else devices[0].device_kind
    refused = None
    try:
        stats = step.compile().memory_analysis()
    except jax.errors.JaxRuntimeError as err:
        refused = _refused_for_memory(err)
        if refused is None:
            raise
        temporaries, available = refused
        notes.append(
            f"the {platform.upper()} compiler refused the step: its temporaries need "
            f"{temporaries / GiB:.2f} GiB of the {available / GiB:.2f} GiB a {kind} device has; the plan "
            "shows its figure (batch and program code not counted) and that device memory"
        )
        stats = types.SimpleNamespace(
            temp_size_in_bytes=temporaries,
            argument_size_in_bytes=params + optimizer,
            output_size_in_bytes=0,
            alias_size_in_bytes=0,
            generated_code_size_in_bytes=0,
        )
        device_memory = available

    measured_copy = _copy_bytes(state.params, compute_dtypes(state.params, step.model.args), compute)
    activations = max(stats.temp_size_in_bytes - params - measured_copy, 0) * scale
    outputs_not_donated = max(stats.output_size_in_bytes - stats.alias_size_in_bytes, 0)
    other = (
        max(stats.argument_size_in_bytes - params - optimizer, 0)
        + outputs_not_donated
        + stats.generated_code_size_in_bytes
    )
    if platform == "cpu":
        notes.append(
            f"compiled by XLA:CPU for {len(devices)} stand-in devices; parameters, optimizer state, "
            "gradients and gathered weights are exact, activations follow that compiler's buffer "
            "assignment with attention held as a fused (flash/cuDNN) kernel holds it (one layer's "
            f"scores at a time); compiled temporaries before scaling: {stats.temp_size_in_bytes / GiB:.2f} GiB"
        )
    elif refused is None:
        notes.append(
            f"compiled by the {platform.upper()} compiler for {len(devices)} {kind} devices: "
            "parameters and optimizer state are exact; temporaries are that compiler's buffer assignment, "
            "holding the gradients and the compute copy of the weights (gathered layer by layer where "
            "the compiler can, so the whole copy is an upper bound) with the activations"
        )
    notes.append(f"attention {step.attention.name}: {step.attention.reason}")
    if sizes.pipeline > 1:
        from internevo_jax.parallel.pipeline import PipelineSchedule

        notes.append(
            PipelineSchedule(sizes.pipeline, plan_cfg.data.micro_num, rules.pipeline_chunks).describe()
        )
    return MemoryPlan(
        job=cfg.job_name,
        devices=len(devices),
        device_kind=kind,
        mesh=dict(step.env.mesh.shape),
        attention=step.attention.name,
        params=params,
        optimizer=optimizer,
        gradients=params,
        gathered=gathered,
        activations=int(activations),
        other=other,
        compiled_temporaries=stats.temp_size_in_bytes,
        device_memory=device_memory,
        notes=notes,
        device_compiler=platform != "cpu",
    )


def dry_run(
    config: str | None,
    *,
    overrides: Sequence[str] = (),
    devices: int | None = None,
    device_memory: str | None = None,
    topology: str | None = None,
) -> int:
    """`--dry-run`: print the memory plan of `config`; exit status 1 when it does not fit."""
    from internevo_jax.config import load_config
    from internevo_jax.monitor import logger, setup_logging

    setup_logging()
    memory = parse_memory(device_memory) if device_memory is not None else None
    if devices is not None and topology is not None:
        raise ConfigError(
            f"--devices={devices} and --topology={topology!r} both say how many devices to plan for; "
            "give one: --topology for a TPU slice (its compiler), --devices for N CPU stand-ins."
        )
    if devices is not None:
        if devices < 1:
            raise ConfigError(f"--devices={devices}: plan for at least one device.")
        use_cpu_devices(devices)
    cfg = load_config(config, list(overrides), log=logger.warning)
    targets = None
    if topology is not None:
        from internevo_jax.parallel.topology import topology_devices

        targets = topology_devices(topology)
    plan = plan_memory(cfg, targets, device_memory=memory)
    print(plan.report(), flush=True)
    return 1 if plan.fits is False else 0
