"""The rules table per tensor mode, the mesh's device order, and layouts refused with arithmetic."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import pytest
from parallel_helpers import tiny_config

from internevo_jax.config import ConfigError, ParallelSizes, parallel_sizes
from internevo_jax.model import build_model
from internevo_jax.names import ACT_EMBED, ACT_HEADS, ACT_MLP, ACT_VOCAB
from internevo_jax.parallel import build_mesh, logical_axis_rules
from internevo_jax.parallel.mesh import split_over_hosts
from internevo_jax.parallel.pipeline import PipelineSchedule
from internevo_jax.parallel.rules import master_axis_rules
from internevo_jax.trainer.state import check_model_layout

BATCH = ("data", "expert", "fsdp")


def mesh_axes(names, rules):
    return tuple(nn.logical_to_mesh_axes(names, rules))


@pytest.mark.parametrize(
    "mode, embed, heads, mlp, vocab",
    [
        # mtp: activations whole along the sequence, tensor on heads / mlp / vocab
        (
            "mtp",
            (BATCH, None, None),
            (BATCH, None, "tensor", None),
            (BATCH, None, "tensor"),
            (BATCH, None, "tensor"),
        ),
        # msp / fsp: the residual stream split along the sequence between the TP regions
        (
            "msp",
            (BATCH, "tensor", None),
            (BATCH, None, "tensor", None),
            (BATCH, None, "tensor"),
            (BATCH, None, "tensor"),
        ),
        (
            "fsp",
            (BATCH, "tensor", None),
            (BATCH, None, "tensor", None),
            (BATCH, None, "tensor"),
            (BATCH, None, "tensor"),
        ),
        # isp: the sequence split everywhere except attention, which is split by heads
        (
            "isp",
            (BATCH, "tensor", None),
            (BATCH, None, "tensor", None),
            (BATCH, "tensor", None),
            (BATCH, "tensor", None),
        ),
    ],
)
def test_activation_layout_per_tensor_mode(mode, embed, heads, mlp, vocab):
    rules = logical_axis_rules(tiny_config(dict(tensor=dict(size=2, mode=mode))))
    assert mesh_axes(ACT_EMBED, rules) == embed
    assert mesh_axes(ACT_HEADS, rules) == heads
    assert mesh_axes(ACT_MLP, rules) == mlp
    assert mesh_axes(ACT_VOCAB, rules) == vocab
    weights = "tensor" if mode != "isp" else None
    assert mesh_axes(("embed", "heads"), rules) == (None, weights)
    assert mesh_axes(("mlp", "embed"), rules) == (weights, None)


def test_master_copy_is_sharded_over_fsdp_compute_copy_only_with_fsdp():
    zero1 = logical_axis_rules(tiny_config(dict(zero1=-1)))
    fsdp = logical_axis_rules(tiny_config(dict(zero1=dict(size=-1, fsdp=True))))
    assert mesh_axes(("embed", "mlp"), zero1) == (None, "tensor")
    assert mesh_axes(("embed", "mlp"), master_axis_rules(zero1)) == ("fsdp", "tensor")
    assert mesh_axes(("norm",), master_axis_rules(zero1)) == ("fsdp",)
    assert mesh_axes(("embed", "mlp"), fsdp) == ("fsdp", "tensor")


def test_tensor_axis_is_innermost_over_neighbouring_devices():
    mesh = build_mesh(ParallelSizes(world=8, pipeline=2, data=1, fsdp=2, tensor=2))
    ids = [[d.id for d in row] for row in mesh.devices.reshape(-1, 2)]
    assert ids == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_hosts_go_on_the_outer_axes():
    # per-host shape, across-host shape: tensor (and what fits) stays inside a host
    assert split_over_hosts((1, 2, 4, 2), 2) == ([1, 1, 4, 2], [1, 2, 1, 1])
    assert split_over_hosts((2, 1, 4, 2), 4) == ([1, 1, 2, 2], [2, 1, 2, 1])
    assert split_over_hosts((1, 1, 1, 8), 2) == ([1, 1, 1, 4], [1, 1, 1, 2])
    assert split_over_hosts((1, 3, 1, 1), 2) is None


def layout_error(parallel, world=8, **model):
    cfg = tiny_config(parallel, **model)
    mesh = build_mesh(parallel_sizes(cfg, world), jax.devices()[:world])
    with pytest.raises(ConfigError) as err:
        check_model_layout(build_model(cfg), mesh, logical_axis_rules(cfg), cfg.data.seq_len)
    return str(err.value)


def test_tensor_size_must_divide_heads_kv_heads_and_mlp():
    msg = layout_error(dict(tensor=8), num_attention_heads=4)
    assert "model.num_attention_heads = 4 cannot be split over tensor 8: 4 % 8 = 4" in msg
    assert "parallel.tensor.size" in msg
    msg = layout_error(dict(tensor=4), num_attention_heads=4, num_kv_attention_heads=2)
    assert "model.num_kv_attention_heads = 2 cannot be split over tensor 4: 2 % 4 = 2" in msg
    msg = layout_error(dict(tensor=4), mlp_ratio=1.8125, multiple_of=2)
    assert (
        "the MLP width (model.hidden_size * mlp_ratio, rounded up to multiple_of) = 58 cannot be split" in msg
    )
    assert "58 % 4 = 2" in msg


def test_vocab_must_split_over_tensor():
    msg = layout_error(dict(tensor=2), vocab_size=131)
    assert "model.vocab_size = 131 cannot be split over tensor 2: 131 % 2 = 1" in msg


def test_hidden_size_must_split_over_the_zero1_group():
    msg = layout_error(dict(zero1=8), hidden_size=36, num_attention_heads=2, num_kv_attention_heads=2)
    assert "model.hidden_size = 36 cannot be split over fsdp 8: 36 % 8 = 4" in msg


def test_sequence_parallel_needs_seq_len_divisible():
    cfg = tiny_config(dict(tensor=dict(size=2, mode="isp")))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=15))
    mesh = build_mesh(parallel_sizes(cfg, 8))
    with pytest.raises(ConfigError, match=r"data.seq_len = 15 cannot be split over tensor 2: 15 % 2 = 1"):
        check_model_layout(build_model(cfg), mesh, logical_axis_rules(cfg), cfg.data.seq_len)


def test_pipeline_refusals_say_what_to_change():
    # InternEvo's pipeline configs never name scan_layers: the layers are stacked by themselves ...
    assert tiny_config(dict(pipeline=2)).model.scan_layers and not tiny_config({}).model.scan_layers
    # ... and only an explicit scan_layers=False is refused
    with pytest.raises(ConfigError, match="model.scan_layers=False is set: remove the key"):
        logical_axis_rules(tiny_config(dict(pipeline=2), scan_layers=False))
    with pytest.raises(
        ConfigError, match=r"model.num_layers = 2 cannot be cut into pipeline 2 x num_chunks 2"
    ):
        logical_axis_rules(tiny_config(dict(pipeline=2), scan_layers=True, num_chunks=2))
    with pytest.raises(ConfigError, match=r"data.micro_num >= parallel.pipeline.size: 2 < 4"):
        PipelineSchedule(stages=4, micro_num=2, chunks=2)


def test_bubble_fraction():
    assert PipelineSchedule(stages=4, micro_num=8).bubble == pytest.approx(3 / 11)
    assert PipelineSchedule(stages=4, micro_num=8, chunks=2).bubble == pytest.approx(3 / 19)
    assert "bubble 27.3%" in PipelineSchedule(stages=4, micro_num=8).describe()
