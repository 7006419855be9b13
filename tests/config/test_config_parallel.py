"""Both InternEvo `parallel` forms, tensor modes, and the mesh-size arithmetic."""

import pytest

from internevo_jax.config import ConfigError, ParallelSizes, config_from_dict, parallel_sizes


def build(parallel, log=None):
    lines = [] if log is None else log
    return config_from_dict({"parallel": parallel}, source="cfg.py", log=lines.append)


def test_old_form_normalises_to_new_form():
    p = build(
        dict(zero1=8, tensor=2, pipeline=dict(size=2, interleaved_overlap=True), sequence_parallel=False)
    ).parallel
    assert (p.zero1.size, p.zero1.fsdp) == (8, False)
    assert (p.tensor.size, p.tensor.mode) == (2, "mtp")
    assert (p.pipeline.size, p.pipeline.interleaved_overlap, p.pipeline.mode) == (2, True, "1F1B")
    assert (p.weight.size, p.weight.overlap, p.weight.memory_pool) == (1, False, False)
    assert p.sequence_parallel is False


def test_old_form_sequence_parallel_maps_to_fsp():
    # Before tensor modes existed, sequence_parallel=True switched on flash-attn's
    # sequence-parallel linears, which InternEvo now calls "fsp".
    p = build(dict(zero1=-1, tensor=4, sequence_parallel=True)).parallel
    assert (p.tensor.size, p.tensor.mode, p.sequence_parallel) == (4, "fsp", True)


def test_old_form_pipeline_as_int():
    assert build(dict(pipeline=4)).parallel.pipeline.size == 4


def test_new_form():
    p = build(
        dict(
            zero1=dict(size=-1, fsdp=True),
            tensor=dict(size=2, mode="msp"),
            pipeline=dict(size=1, interleaved_overlap=True),
            weight=dict(size=1, overlap=True, memory_pool=True),
        )
    ).parallel
    assert (p.zero1.size, p.zero1.fsdp) == (-1, True)
    assert (p.tensor.size, p.tensor.mode, p.sequence_parallel) == (2, "msp", True)
    assert (p.weight.overlap, p.weight.memory_pool) == (True, True)


@pytest.mark.parametrize(
    "mode, seq", [("mtp", False), ("msp", True), ("fsp", True), ("isp", True), ("MSP", True)]
)
def test_tensor_modes(mode, seq):
    p = build(dict(tensor=dict(size=1, mode=mode))).parallel
    assert p.tensor.mode == mode.lower() and p.sequence_parallel is seq


def test_tensor_dict_without_mode_is_mtp():
    assert build(dict(tensor=dict(size=2))).parallel.tensor.mode == "mtp"


def test_sequence_parallel_flag_with_mtp_is_ignored_with_a_note():
    lines = []
    p = build(dict(tensor=dict(size=2, mode="mtp"), sequence_parallel=True), log=lines).parallel
    assert p.sequence_parallel is False
    assert any("sequence_parallel=True is ignored" in line for line in lines)


def test_absent_parallel_is_all_defaults():
    p = config_from_dict({}).parallel
    assert (p.zero1.size, p.tensor.size, p.pipeline.size, p.weight.size) == (-1, 1, 1, 1)


def sizes(parallel, world):
    return parallel_sizes(build(parallel), world)


@pytest.mark.parametrize(
    "parallel, world, expected",
    [
        (dict(zero1=-1), 8, ParallelSizes(8, 1, 1, 8, 1)),  # <= 0: the whole dp group
        (dict(zero1=0), 8, ParallelSizes(8, 1, 1, 8, 1)),
        (dict(zero1=1), 8, ParallelSizes(8, 1, 8, 1, 1)),  # 1: no sharding
        (dict(zero1=4), 8, ParallelSizes(8, 1, 2, 4, 1)),  # divisor of dp
        (dict(zero1=8), 8, ParallelSizes(8, 1, 1, 8, 1)),
        (dict(zero1=2, tensor=2, pipeline=2), 16, ParallelSizes(16, 2, 2, 2, 2)),
        (dict(zero1=-1, tensor=8), 8, ParallelSizes(8, 1, 1, 1, 8)),
        (dict(zero1=-1), 1, ParallelSizes(1, 1, 1, 1, 1)),
    ],
)
def test_parallel_sizes(parallel, world, expected):
    got = sizes(parallel, world)
    assert got == expected
    assert got.dp == got.data * got.fsdp == world // (got.pipeline * got.tensor)
    assert got.mesh_shape == (got.pipeline, got.data, got.expert, got.fsdp, got.tensor)


def test_world_not_divisible_shows_the_arithmetic():
    with pytest.raises(ConfigError) as info:
        sizes(dict(pipeline=3), 8)
    message = str(info.value)
    assert "world size 8 = pipeline 3 x tensor 1 x data ? does not divide: 8 % 3 = 2" in message
    assert "choose sizes whose product divides 8" in message
    assert message.startswith("<config>: ")


def test_zero1_not_dividing_dp():
    with pytest.raises(ConfigError, match=r"parallel\.zero1\.size.*8 % 3 = 2"):
        sizes(dict(zero1=3), 8)
    with pytest.raises(ConfigError, match=r"zero1 group 16 .* 8 % 16 = 8"):
        sizes(dict(zero1=16), 8)


def test_weight_parallel_is_the_sharding_group():
    # InternEvo's 7B_llama2 layout: isp, weight 2, zero1 4 (a divisor of world/weight = 4).
    got = sizes(dict(zero1=dict(size=4), tensor=dict(size=1, mode="isp"), weight=dict(size=2)), 8)
    assert got == ParallelSizes(8, 1, 4, 2, 1)
    # 7B_internlm2: isp sequence size 2 on the tensor axis, weight 2.
    got = sizes(dict(zero1=dict(size=-1), tensor=dict(size=2, mode="isp"), weight=dict(size=2)), 8)
    assert got == ParallelSizes(8, 1, 2, 2, 2)
    with pytest.raises(ConfigError, match=r"parallel\.weight\.size.*4 % 3 = 1"):
        sizes(dict(tensor=dict(size=2, mode="isp"), weight=dict(size=3)), 8)
    with pytest.raises(ConfigError, match=r"parallel\.zero1\.size.*4 % 3 = 1"):
        sizes(dict(zero1=3, tensor=dict(size=1, mode="isp"), weight=dict(size=2)), 8)


def test_world_size_must_be_positive():
    with pytest.raises(ConfigError):
        sizes({}, 0)


def test_num_chunks_without_a_pipeline_gets_a_no_effect_note():
    lines = []
    model = dict(num_layers=4, num_chunks=2)
    config_from_dict({"model": model}, source="cfg.py", log=lines.append)
    notes = [line for line in lines if "model.num_chunks=2 has no effect" in line]
    assert len(notes) == 1 and "parallel.pipeline.size=1" in notes[0] and notes[0].startswith("cfg.py: ")
    lines.clear()
    config_from_dict({"model": model, "parallel": dict(pipeline=2)}, source="cfg.py", log=lines.append)
    assert not [line for line in lines if "num_chunks" in line]  # interleaves the 2 stages
    lines.clear()
    config_from_dict({"model": dict(num_layers=4)}, source="cfg.py", log=lines.append)
    assert not [line for line in lines if "num_chunks" in line]
