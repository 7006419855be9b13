"""--set KEY=VALUE overrides."""

from pathlib import Path

import jax.numpy as jnp
import pytest

from internevo_jax.config import ConfigError, config_from_dict, load_config

SFT = Path(__file__).resolve().parents[2] / "configs" / "7b_sft.py"


def quiet(line):
    pass


def test_overrides_of_nested_keys_in_a_file():
    cfg = load_config(
        SFT,
        ["data.micro_bsz=4", "model.dtype=torch.bfloat16", "parallel.zero1.size=2", "JOB_NAME=x"],
        log=quiet,
    )
    assert cfg.data.micro_bsz == 4
    assert cfg.data.packed_length == 2048 * 4  # derived values follow the override
    assert cfg.model.compute_dtype == jnp.bfloat16
    assert cfg.parallel.zero1.size == 2  # the file's old form zero1=8 was normalised first
    assert cfg.job_name == "x" and cfg.run_dir == "runs/x"


def test_values_are_python_literals_or_raw_strings():
    cfg = config_from_dict(
        {},
        overrides=[
            "model.checkpoint=0.5",
            "model.use_flash_attn=False",
            "data.train_folder=/data/train",
            "data.valid_folder=None",
            "ckpt.load_ckpt_info.path=local:/ckpt",
            "ckpt.load_ckpt_info.content=['model', 'optimizer']",
        ],
        log=quiet,
    )
    assert cfg.model.checkpoint == 0.5 and cfg.model.use_flash_attn is False
    assert cfg.data.train_folder == "/data/train" and cfg.data.valid_folder is None
    assert cfg.ckpt.load_ckpt_info.path == "local:/ckpt"
    assert cfg.ckpt.load_ckpt_info.content == ("model", "optimizer")


def test_string_keys_keep_the_raw_text():
    cfg = config_from_dict(
        {}, overrides=["JOB_NAME=123", "model_type=LLAMA2", "data.tokenizer_path=1.5"], log=quiet
    )
    assert cfg.job_name == "123" and cfg.model_type == "LLAMA2" and cfg.data.tokenizer_path == "1.5"


def test_override_a_whole_old_form_value():
    cfg = config_from_dict(
        {"parallel": dict(zero1=8)}, overrides=["parallel.tensor=2", "parallel.zero1=4"], log=quiet
    )
    assert (cfg.parallel.tensor.size, cfg.parallel.tensor.mode, cfg.parallel.zero1.size) == (2, "mtp", 4)


def test_lr_total_steps_follows_data_total_steps_when_absent():
    cfg = config_from_dict({}, overrides=["data.total_steps=123"], log=quiet)
    assert cfg.lr_scheduler.total_steps == 123


def test_unknown_override_key_says_it_came_from_set():
    with pytest.raises(ConfigError) as info:
        load_config(SFT, ["data.micro_bz=4"], log=quiet)
    message = str(info.value)
    assert "unknown key 'data.micro_bz' (from --set data.micro_bz=4)" in message
    assert "Did you mean 'data.micro_bsz'?" in message
    with pytest.raises(ConfigError, match=r"unknown key 'modle' \(from --set modle\.dtype=fp32\).*'model'"):
        config_from_dict({}, overrides=["modle.dtype=fp32"], log=quiet)
    with pytest.raises(ConfigError, match=r"'model\.num_layers' is an integer, so it has no key 'x'"):
        config_from_dict({}, overrides=["model.num_layers.x=1"], log=quiet)


def test_override_values_are_type_checked():
    with pytest.raises(ConfigError, match=r"'data\.micro_bsz' must be an integer, got 'four'"):
        config_from_dict({}, overrides=["data.micro_bsz=four"], log=quiet)
    # a dict(...) call is not a literal: it stays a string and fails the type check
    with pytest.raises(ConfigError, match=r"'ckpt\.load_ckpt_info' must be a dict or None"):
        config_from_dict({}, overrides=["ckpt.load_ckpt_info=dict(path='x')"], log=quiet)


@pytest.mark.parametrize("bad", ["data.micro_bsz", "=4", "data..micro_bsz=4", ""])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="--set"):
        config_from_dict({}, overrides=[bad], log=quiet)


def test_upper_case_variables_cannot_be_overridden():
    with pytest.raises(ConfigError, match=r"SEQ_LEN.*data\.seq_len"):
        load_config(SFT, ["SEQ_LEN=4096"], log=quiet)


def test_overrides_do_not_mutate_the_input():
    raw = {"data": {"micro_bsz": 2}}
    config_from_dict(raw, overrides=["data.micro_bsz=8"], log=quiet)
    assert raw == {"data": {"micro_bsz": 2}}


def test_override_of_no_effect_key_is_reported():
    lines = []
    cfg = config_from_dict({}, overrides=["cudnn_benchmark=True"], log=lines.append)
    assert cfg.no_effect_keys == ("cudnn_benchmark",) and len(lines) == 1
