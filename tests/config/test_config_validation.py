"""Unknown keys, wrong types, impossible values and dtype strings."""

import jax.numpy as jnp
import pytest

from internevo_jax.config import ConfigError, config_from_dict, load_config


def build(d, overrides=()):
    return config_from_dict(d, source="cfg.py", overrides=overrides, log=lambda _: None)


def error_of(d, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        build(d, overrides)
    message = str(info.value)
    assert message.startswith("cfg.py: ") and "\n" not in message  # one paragraph naming the source
    return message


@pytest.mark.parametrize(
    "d, key, suggestion",
    [
        ({"dta": {}}, "'dta'", "Did you mean 'data'?"),
        ({"data": {"micro_bz": 2}}, "'data.micro_bz'", "Did you mean 'data.micro_bsz'?"),
        ({"model": {"num_attention_head": 8}}, "'model.num_attention_head'", "'model.num_attention_heads'"),
        ({"parallel": {"zero1": {"szie": 2}}}, "'parallel.zero1.szie'", "'parallel.zero1.size'"),
        (
            {"ckpt": {"load_ckpt_info": {"paht": "x"}}},
            "'ckpt.load_ckpt_info.paht'",
            "'ckpt.load_ckpt_info.path'",
        ),
        ({"grad_scaler": {"fp16": {"initial_scal": 1}}}, "'grad_scaler.fp16.initial_scal'", "initial_scale"),
    ],
)
def test_unknown_key_names_it_and_the_closest_valid_key(d, key, suggestion):
    message = error_of(d)
    assert f"unknown key {key}" in message
    assert suggestion in message


def test_unknown_top_level_name_explains_helper_variables():
    message = error_of({"seq_len": 2048})
    assert "unknown key 'seq_len'" in message and "UPPER_CASE" in message


@pytest.mark.parametrize(
    "d, key, expected",
    [
        ({"data": {"micro_bsz": "4"}}, "data.micro_bsz", "must be an integer"),
        ({"data": {"micro_bsz": 2.5}}, "data.micro_bsz", "must be an integer"),
        ({"data": {"micro_num": True}}, "data.micro_num", "must be an integer"),  # bool is not an int here
        ({"data": {"pack_sample_into_one": 1}}, "data.pack_sample_into_one", "must be True or False"),
        ({"model": {"dtype": 16}}, "model.dtype", "must be a string"),
        ({"model": {"checkpoint": "half"}}, "model.checkpoint", "True or False or a number"),
        ({"adam": {"lr": "1e-4"}}, "adam.lr", "must be a number"),
        ({"adam": {"lr": True}}, "adam.lr", "must be a number"),
        ({"data": 3}, "data", "must be a dict"),
        ({"ckpt": {"load_ckpt_info": {"content": [1]}}}, "ckpt.load_ckpt_info.content", "list of strings"),
        ({"parallel": {"zero1": "8"}}, "parallel.zero1", "integer size or a dict"),
        ({"parallel": {"tensor": {"size": 2.5}}}, "parallel.tensor.size", "must be an integer"),
        ({"seed": "1"}, "seed", "must be an integer"),
    ],
)
def test_wrong_types_name_key_and_expected_type(d, key, expected):
    message = error_of(d)
    assert f"'{key}'" in message and expected in message


def test_integral_floats_are_integers():
    cfg = build({"data": {"total_steps": 5e4, "micro_bsz": 2.0}})
    assert cfg.data.total_steps == 50000 and isinstance(cfg.data.total_steps, int)
    assert cfg.data.micro_bsz == 2


@pytest.mark.parametrize(
    "d, key",
    [
        ({"data": {"seq_len": 0}}, "data.seq_len"),
        ({"data": {"micro_num": -1}}, "data.micro_num"),
        ({"data": {"micro_bsz": 0}}, "data.micro_bsz"),
        ({"data": {"valid_every": -1}}, "data.valid_every"),
        ({"data": {"micro_num": 4, "gradient_accumulation": 2}}, "data.gradient_accumulation"),
        ({"data": {"rampup_batch_size": "192 24"}}, "data.rampup_batch_size"),
        ({"data": {"skip_batches": "10-x"}}, "data.skip_batches"),
        ({"model": {"num_layers": 0}}, "model.num_layers"),
        ({"model": {"hidden_size": -8}}, "model.hidden_size"),
        ({"model": {"hidden_size": 100, "num_attention_heads": 3}}, "model.hidden_size"),
        ({"model": {"num_attention_heads": 32, "num_kv_attention_heads": 5}}, "model.num_kv_attention_heads"),
        ({"model": {"num_layers": 10, "num_chunks": 3}}, "model.num_chunks"),
        ({"model": {"checkpoint": 1.5}}, "model.checkpoint"),
        ({"model": {"checkpoint": -0.1}}, "model.checkpoint"),
        ({"model": {"dtype": "torch.float64"}}, "model.dtype"),
        ({"model": {"remat_policy": "save_dots"}}, "model.remat_policy"),
        ({"model": {"norm_type": "batchnorm"}}, "model.norm_type"),
        ({"model": {"num_experts": 0}}, "model.num_experts"),
        ({"model": {"num_experts": 4, "top_k": 5}}, "model.top_k"),
        ({"model": {"num_experts": 4}, "parallel": {"pipeline": 2}}, "parallel.pipeline.size"),
        ({"parallel": {"tensor": {"size": 2, "mode": "xsp"}}}, "parallel.tensor.mode"),
        ({"parallel": {"pipeline": {"size": 0}}}, "parallel.pipeline.size"),
        ({"parallel": {"pipeline": {"mode": "gpipe"}}}, "parallel.pipeline.mode"),
        ({"parallel": {"weight": {"size": 2}}}, "parallel.weight.size"),
        ({"adam": {"lr": -1e-4}}, "adam.lr"),
        ({"adam": {"adam_beta2": 1.0}}, "adam.adam_beta2"),
        ({"lr_scheduler": {"warmup_ratio": 1.5}}, "lr_scheduler.warmup_ratio"),
        ({"lr_scheduler": {"warmup_ratio": -0.1}}, "lr_scheduler.warmup_ratio"),
        ({"loss": {"label_smoothing": 1.0}}, "loss.label_smoothing"),
        ({"grad_scaler": {"backoff_factor": 0}}, "grad_scaler.backoff_factor"),
        ({"ckpt": {"checkpoint_every": 0}}, "ckpt.checkpoint_every"),
        ({"ckpt": {"load_ckpt_info": {"path": "p", "content": ["weights"]}}}, "ckpt.load_ckpt_info.content"),
        ({"ckpt": {"load_ckpt_info": {"content": ["model"]}}}, "ckpt.load_ckpt_info.path"),
        ({"model": {"adapt_hf": True, "qk_interleaved": True}}, "model.qk_interleaved"),
    ],
)
def test_impossible_values_are_rejected(d, key):
    assert f"'{key}'" in error_of(d)


def test_arithmetic_is_shown():
    message = error_of({"model": {"hidden_size": 100, "num_attention_heads": 3}})
    assert "100 % 3 = 1" in message


def test_model_type_is_not_checked_here():
    assert build({"model_type": "NOT_A_MODEL"}).model_type == "NOT_A_MODEL"


@pytest.mark.parametrize(
    "dtype, jnp_dtype, precision",
    [
        ("torch.float16", jnp.float16, None),
        ("torch.half", jnp.float16, None),
        ("torch.bfloat16", jnp.bfloat16, None),
        ("torch.float32", jnp.float32, "highest"),
        ("torch.tf32", jnp.float32, "tensorfloat32"),
        ("float16", jnp.float16, None),
        ("fp16", jnp.float16, None),
        ("bfloat16", jnp.bfloat16, None),
        ("bf16", jnp.bfloat16, None),
        ("float32", jnp.float32, "highest"),
        ("fp32", jnp.float32, "highest"),
    ],
)
def test_dtype_strings(dtype, jnp_dtype, precision):
    model = build({"model": {"dtype": dtype}}).model
    assert model.dtype == dtype
    assert model.compute_dtype == jnp_dtype
    assert model.matmul_precision == precision


@pytest.mark.parametrize("checkpoint, layers", [(True, 32), (False, 0), (0.5, 16), (0.2, 6), (1, 32), (0, 0)])
def test_checkpoint_layers(checkpoint, layers):
    assert build({"model": {"num_layers": 32, "checkpoint": checkpoint}}).model.checkpoint_layers == layers


@pytest.mark.parametrize(
    "hidden, ratio, mlp", [(4096, 8 / 3, 11008), (2048, 8 / 3, 5632), (4096, 3.5, 14336), (256, 4.0, 1024)]
)
def test_mlp_hidden_size_rounds_up_to_multiple_of_256(hidden, ratio, mlp):
    assert build({"model": {"hidden_size": hidden, "mlp_ratio": ratio}}).model.mlp_hidden_size == mlp


def test_kv_heads_default_to_heads():
    assert (
        build({"model": {"num_attention_heads": 16, "hidden_size": 1024}}).model.num_kv_attention_heads == 16
    )


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "my_cfg.py"
    path.write_text("data = dict(micro_bz=2)\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, log=lambda _: None)
    assert str(info.value).startswith(f"{path}: unknown key 'data.micro_bz'")
    assert info.value.key == "data.micro_bz" and isinstance(info.value, ValueError)


# InternEvo's newer keys: accepted (and listed as without effect) when off, refused by name when they
# ask for a feature this project lacks.
NEWER_KEYS_OFF = {
    "selective_checkpoint": True,  # a speed/memory trade that never changes results: accepted
    "selective_checkpoint_offload": False,
    "parallel": dict(
        sequence_2D=dict(enable=False, head_size=2, context_size=4, window_size=1),
        pipeline=dict(size=1, mode="1F1B", use_zeropp=False, zero_bubble=False),
        weight=dict(
            size=1, overlap=True, memory_pool=True, launch_allgather_before="wo", forward_overlap_per="layer"
        ),
    ),
    "model": dict(enable_qkv_fusion=True, mlp_layer_fusion=True, qk_interleaved=False),
    "loss": dict(op_type="flash_vocab_parallel"),
    "metric_dtype": "fp32",
    "generation": dict(ckpt_folder="/x", max_length=10, output_folder="/y"),
    "ckpt": dict(universal_ckpt=dict(aysnc_save=True, broadcast_load=False)),
    "monitor": dict(tensorboard=dict(queue_max_length=10), alert=dict(alert_file_path="llm_alter/a.log")),
    "data": dict(use_packed_dataset=True, min_length_dict={"en": 10}, use_shm=False, shm_path="/dev/shm/x"),
}


def test_internevo_newer_keys_load_when_off_and_no_effect_ones_are_listed():
    logs = []
    cfg = config_from_dict(NEWER_KEYS_OFF, source="cfg.py", log=logs.append)
    assert cfg.model.enable_qkv_fusion is True and cfg.data.min_length_dict == {"en": 10}
    listed = set(cfg.no_effect_keys)
    for key in (
        "selective_checkpoint",
        "parallel.sequence_2D",
        "parallel.pipeline.zero_bubble",
        "model.mlp_layer_fusion",
        "loss.op_type",
        "metric_dtype",
        "generation.output_folder",
        "ckpt.universal_ckpt",
        "parallel.weight.launch_allgather_before",
        "data.use_shm",
    ):
        assert key in listed, key
    # keys that change the batches are honoured, so never listed as without effect
    assert "data.use_packed_dataset" not in listed and "data.min_length_dict" not in listed
    assert not {"monitor.tensorboard", "monitor.alert.alert_file_path"} & listed  # they work here
    assert sum("have no effect in JAX" in line for line in logs) == 1


@pytest.mark.parametrize(
    "on, key, feature",
    [
        ({"parallel": dict(sequence_2D=dict(enable=True))}, "'parallel.sequence_2D.enable'", "2D sequence"),
        (
            {"parallel": dict(pipeline=dict(zero_bubble=True))},
            "'parallel.pipeline.zero_bubble'",
            "zero-bubble",
        ),
        ({"parallel": dict(pipeline=dict(mode="ZBV"))}, "'parallel.pipeline.mode'", "ZBH1, ZBV"),
        ({"parallel": dict(pipeline=dict(use_zeropp=True))}, "'parallel.pipeline.use_zeropp'", "ZeRO++"),
    ],
)
def test_internevo_features_we_lack_are_refused_by_name(on, key, feature):
    message = error_of(on)
    assert key in message and feature in message and "not implemented" in message


def test_internevo_hf_module_wrapper_is_refused_and_from_hf_needs_the_hf_layout():
    message = error_of({"hf": dict(cfg="x.configuration", cfg_cls="C", mod="x.modeling", mod_cls="M")})
    assert "'hf'" in message and 'ckpt_type="hf"' in message
    message = error_of({"model_type": "INTERNLM_FROM_HF", "model": dict(adapt_hf=False)})
    assert "'model.adapt_hf'" in message
    cfg = build({"model_type": "INTERNLM_FROM_HF", "model": dict(adapt_hf=True)})
    assert cfg.model.qk_interleaved is False


@pytest.mark.parametrize(
    "given, resolved", [("hf_model", "hf"), ("HF_LLAMA", "hf"), ("internlm", "internevo")]
)
def test_internevo_checkpoint_type_names(given, resolved):
    cfg = build({"ckpt": dict(load_ckpt_info=dict(path="/x", content=("model",), ckpt_type=given))})
    assert cfg.ckpt.load_ckpt_info.ckpt_type == resolved


def test_a_multimodal_model_type_is_refused_before_its_own_keys_are_checked():
    # InternEvo's chameleon configs carry data keys of their own (data_yaml, ...): the reason given is
    # the model type, not an unknown key
    message = error_of({"model_type": "CHAMELEON", "data": dict(data_yaml="data.yaml", image_size=512)})
    assert "'CHAMELEON' is a mixed-modal" in message and "unknown key" not in message


def test_int8_training_is_refused_and_torch_fsdp_becomes_zero1_fsdp():
    assert "int8 training" in error_of({"int8_training": True, "int8_mode": "tile_block"})
    cfg = build(
        {"int8_training": False, "parallel": dict(fsdp=dict(enable=True, mode="v1", init_method="meta"))}
    )
    assert cfg.parallel.zero1.fsdp is True
    cfg = build({"data": dict(unit_schedule_size=4), "parallel": dict(pipeline=dict(decouple_grad=True))})
    assert {"data.unit_schedule_size", "parallel.pipeline.decouple_grad"} <= set(cfg.no_effect_keys)
