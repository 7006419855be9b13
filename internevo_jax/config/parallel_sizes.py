"""Mesh axis sizes from the ``parallel`` section and the number of devices."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .schema import Config


@dataclass(frozen=True)
class ParallelSizes:
    """Sizes of the mesh axes ("pipeline", "data", "expert", "fsdp", "tensor"); their product is
    ``world``. The "expert" axis (expert parallelism) is a part of data parallelism."""

    world: int
    pipeline: int
    data: int
    fsdp: int
    tensor: int
    expert: int = 1

    @property
    def dp(self) -> int:
        """The data-parallel size: the batch is split over data x expert x fsdp."""
        return self.data * self.expert * self.fsdp

    @property
    def mesh_shape(self) -> tuple[int, int, int, int, int]:
        """Axis sizes in names.MESH_AXES order."""
        return (self.pipeline, self.data, self.expert, self.fsdp, self.tensor)


def parallel_sizes(cfg: Config, world_size: int) -> ParallelSizes:
    """Split ``world_size`` devices into pipeline x data x fsdp x tensor.

    dp = world / (pipeline * tensor). The sharding group (the "fsdp" axis) is the zero1 group:
    zero1.size <= 0 -> all of dp, 1 -> no sharding, otherwise a divisor of dp. With
    weight.size > 1 (tensor mode "isp") the weight group is the sharding group instead and must
    divide dp; zero1.size is then checked the way InternEvo checks it (a divisor of
    world / (pipeline * weight)) but does not change the mesh (docs/config.md).
    """
    source = cfg.source_path or "<config>"
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(
            f"{source}: world size must be a positive integer, got {world_size!r}.", source=source
        )
    par = cfg.parallel
    pp, tp, w, z = par.pipeline.size, par.tensor.size, par.weight.size, par.zero1.size
    if world_size % (pp * tp):
        raise ConfigError(
            f"{source}: parallel.pipeline.size / parallel.tensor.size: world size {world_size} = "
            f"pipeline {pp} x tensor {tp} x data ? does not divide: {world_size} % {pp * tp} = "
            f"{world_size % (pp * tp)}; choose sizes whose product divides {world_size}.",
            key="parallel",
            source=source,
        )
    dp = world_size // (pp * tp)
    if w > 1:
        if dp % w:
            raise ConfigError(
                f"{source}: parallel.weight.size: the weight group {w} must divide the data-parallel size "
                f"{dp} (= world {world_size} / (pipeline {pp} x tensor {tp})): {dp} % {w} = {dp % w}; "
                f"choose a weight size that divides {dp}.",
                key="parallel.weight.size",
                source=source,
            )
        wdp = world_size // (pp * w)
        if z > 1 and wdp % z:
            raise ConfigError(
                f"{source}: parallel.zero1.size: with weight parallelism the zero1 group {z} must divide "
                f"world {world_size} / (pipeline {pp} x weight {w}) = {wdp}: {wdp} % {z} = {wdp % z}; "
                f"use -1 or a divisor of {wdp}.",
                key="parallel.zero1.size",
                source=source,
            )
        fsdp = w
    elif z <= 0:
        fsdp = dp
    elif z == 1:
        fsdp = 1
    else:
        if dp % z:
            raise ConfigError(
                f"{source}: parallel.zero1.size: the zero1 group {z} must divide the data-parallel size "
                f"{dp} (= world {world_size} / (pipeline {pp} x tensor {tp})): {dp} % {z} = {dp % z}; "
                f"use -1 (the whole data-parallel group), 1 (no sharding) or a divisor of {dp}.",
                key="parallel.zero1.size",
                source=source,
            )
        fsdp = z
    data, ep = dp // fsdp, expert_parallel_size(cfg, dp)
    # The expert group comes out of the ZeRO group when it divides it (ZeRO then spans both axes:
    # parallel/rules.py), else out of the rest of data parallelism.
    if fsdp % ep == 0:
        fsdp //= ep
    elif data % ep == 0:
        data //= ep
    else:
        raise ConfigError(
            f"{source}: parallel.expert.size: the expert-parallel size {ep} divides the data-parallel size "
            f"{dp} but neither the zero1/weight group {fsdp} nor the rest {data}; choose an expert size that "
            f"divides {fsdp} or {data}, or change parallel.zero1.size.",
            key="parallel.expert.size",
            source=source,
        )
    return ParallelSizes(world=world_size, pipeline=pp, data=data, fsdp=fsdp, tensor=tp, expert=ep)


def expert_parallel_size(cfg: Config, dp: int) -> int:
    """InternEvo's expert-parallel size: parallel.expert.size, where -1 (or less) means the
    data-parallel size; either way at most model.num_experts. 1 for a dense model."""
    source = cfg.source_path or "<config>"
    experts = cfg.model.num_experts
    if experts <= 1:
        return 1
    requested = cfg.parallel.expert.size
    ep = min(dp if requested <= -1 else requested, experts)
    if ep < 1 or dp % ep or experts % ep:
        raise ConfigError(
            f"{source}: parallel.expert.size = {requested} gives an expert-parallel size of {ep}, which must "
            f"divide both the data-parallel size {dp} (= world / (pipeline x tensor)) and model.num_experts "
            f"= {experts}; use -1 (as many as fit) or a common divisor of {dp} and {experts}.",
            key="parallel.expert.size",
            source=source,
        )
    return ep
