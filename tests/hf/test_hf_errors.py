"""Clear errors: another architecture, a missing shard, a shape mismatch, unexportable models,
and the tools' non-zero exit with a one-paragraph message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hf_helpers import REPO, load_tool, random_params, save_random_internlm2, tiny_cfg

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.model_files import save_params
from internevo_jax.hf import export_hf, import_hf, load_hf_params


def abstract_of(cfg):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from internevo_jax.model import build_model

    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return nn.meta.unbox(
        jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), ids, ids, ids)["params"]
    )


@pytest.fixture(scope="module")
def internlm2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("internlm2")
    save_random_internlm2(str(folder), kv_heads=2)
    return folder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "hf"
    cfg = tiny_cfg("LLAMA2")
    export_hf(random_params(cfg), cfg, str(folder), dtype="fp32", max_shard_size="30KB")
    return folder


def test_wrong_architecture_names_both_sides(internlm2_dir, llama_dir):
    cfg = tiny_cfg("LLAMA2")
    with pytest.raises(CheckpointError) as info:
        load_hf_params(str(internlm2_dir), cfg, abstract_of(cfg))
    message = str(info.value)
    assert "InternLM2ForCausalLM" in message and "LLAMA2" in message and "model_type=INTERNLM2" in message
    cfg2 = tiny_cfg("INTERNLM2")
    with pytest.raises(CheckpointError, match="holds a LlamaForCausalLM model"):
        load_hf_params(str(llama_dir), cfg2, abstract_of(cfg2))
    with pytest.raises(CheckpointError, match="cannot be read as model_type 'INTERNLM2'"):
        import_hf(str(llama_dir), "INTERNLM2")


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    )
    with pytest.raises(CheckpointError, match="GPT2LMHeadModel.*LlamaForCausalLM .*Qwen2ForCausalLM"):
        import_hf(str(tmp_path))


def test_config_json_without_a_size_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(CheckpointError, match="config.json has no 'hidden_size'"):
        import_hf(str(tmp_path))


def test_missing_shard_is_named(tmp_path, llama_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(llama_dir, broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    os.remove(broken / victim)
    cfg = tiny_cfg("LLAMA2")
    with pytest.raises(CheckpointError, match=f"lists the shard {victim}, which is not in the folder"):
        load_hf_params(str(broken), cfg, abstract_of(cfg))


def test_shape_mismatch_names_the_tensor_and_both_shapes(llama_dir):
    cfg = tiny_cfg("LLAMA2", kv_heads=3)  # the folder has 2 kv heads of 8 lanes
    with pytest.raises(CheckpointError) as info:
        load_hf_params(str(llama_dir), cfg, abstract_of(cfg))
    message = str(info.value)
    assert "'model.layers.0.self_attn.k_proj.weight' has shape (16, 48)" in message
    assert "'layers_0.attention.wk.kernel' needs (24, 48)" in message


def test_bias_mismatch_explains_attention_bias(llama_dir):
    cfg = tiny_cfg("INTERNLM")  # biases, but the folder has none
    with pytest.raises(
        CheckpointError, match=r"no tensor 'model.layers.0.self_attn.[qkv]_proj.bias'.*attention_bias"
    ):
        load_hf_params(str(llama_dir), cfg, abstract_of(cfg))
    cfg = tiny_cfg("LLAMA2", num_layers=1)  # fewer layers than the folder
    with pytest.raises(CheckpointError, match="hold 'model.layers.1.*no place for"):
        load_hf_params(str(llama_dir), cfg, abstract_of(cfg))


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        import_hf(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="pytorch_model.bin, which are not a safetensors model"):
        load_hf_params(str(tmp_path), tiny_cfg("LLAMA2"), abstract_of(tiny_cfg("LLAMA2")))


def test_unexportable_models_are_refused_before_writing(tmp_path):
    cfg = tiny_cfg("INTERNLM2", apply_post_layer_norm=True)
    with pytest.raises(CheckpointError, match="apply_post_layer_norm=True"):
        export_hf(random_params(cfg), cfg, str(tmp_path / "hf"))
    cfg = tiny_cfg("LLAMA2", norm_type="layernorm")
    with pytest.raises(CheckpointError, match="LayerNorm|layernorm"):
        export_hf(random_params(cfg), cfg, str(tmp_path / "hf"))
    assert not os.listdir(tmp_path)  # nothing half-written, no temporary folder


def test_params_that_do_not_fit_the_config(tmp_path):
    cfg = tiny_cfg("LLAMA2")
    params = random_params(tiny_cfg("LLAMA2", kv_heads=6))
    with pytest.raises(CheckpointError, match="do not fit the model their config describes"):
        export_hf(params, cfg, str(tmp_path / "hf"))


def test_existing_target_needs_overwrite(tmp_path, llama_dir):
    cfg = tiny_cfg("LLAMA2")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("x")
    with pytest.raises(CheckpointError, match="--overwrite"):
        export_hf(random_params(cfg), cfg, str(tmp_path / "hf"))
    export_hf(random_params(cfg), cfg, str(tmp_path / "hf"), overwrite=True)
    assert not (tmp_path / "hf" / "keep.txt").exists() and (tmp_path / "hf" / "config.json").exists()


def test_tools_exit_non_zero_with_a_message(tmp_path, capsys):
    convert2hf, hf2internevo = load_tool("convert2hf"), load_tool("hf2internevo")
    assert convert2hf.main(["--src", str(tmp_path / "nothing"), "--tgt", str(tmp_path / "hf")]) == 2
    assert "error: No checkpoint at" in capsys.readouterr().err
    cfg = tiny_cfg("LLAMA2")
    save_params(str(tmp_path / "ckpt"), random_params(cfg), cfg)
    os.remove(tmp_path / "ckpt" / "COMMITTED")
    assert convert2hf.main(["--src", str(tmp_path / "ckpt"), "--tgt", str(tmp_path / "hf")]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert hf2internevo.main(["--src", str(tmp_path), "--tgt", str(tmp_path / "out")]) == 2
    assert "config.json does not exist" in capsys.readouterr().err
    # The real command line: non-zero exit status and the message on stderr.
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "hf2internevo.py"),
            "--src",
            str(tmp_path),
            "--tgt",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr
