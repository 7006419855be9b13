"""Export -> import round trips through the command-line tools, the files they write, and the
trainer loading both the imported checkpoint and the HF folder itself."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from hf_helpers import TOKENIZERS, load_tool, random_params, tiny_cfg

from internevo_jax.checkpoint.model_files import load_params, save_params

convert2hf, hf2internevo = load_tool("convert2hf"), load_tool("hf2internevo")

# model_type -> (its own model keys, the HF architecture it is written as)
MODEL_TYPES = {
    "INTERNLM": ({}, "LlamaForCausalLM"),
    "LLAMA2": ({}, "LlamaForCausalLM"),
    "INTERNLM2": ({}, "InternLM2ForCausalLM"),
    "INTERNLM3": ({}, "InternLM3ForCausalLM"),
    "QWEN2": ({}, "Qwen2ForCausalLM"),
    "QWEN3": (dict(head_dim=16), "Qwen3ForCausalLM"),
    "GEMMA": (dict(head_dim=16, use_swiglu=False, add_unit_offset=True), "GemmaForCausalLM"),
    "BAICHUAN2": ({}, "BaichuanForCausalLM"),
}


def assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_export_import_round_trip_is_exact(tmp_path, model_type, capsys):
    model_keys, architecture = MODEL_TYPES[model_type]
    cfg = tiny_cfg(model_type, **model_keys)
    params = random_params(cfg, seed=1)
    save_params(str(tmp_path / "ckpt"), params, cfg)
    hf_dir, back = tmp_path / "hf", tmp_path / "back"
    assert (
        convert2hf.main(
            [
                "--src",
                str(tmp_path / "ckpt"),
                "--tgt",
                str(hf_dir),
                "--dtype",
                "fp32",
                "--max_shard_size",
                "40KB",
            ]
        )
        == 0
    )
    assert hf2internevo.main(["--src", str(hf_dir), "--tgt", str(back), "--model_type", model_type]) == 0
    out = capsys.readouterr().out
    assert f'model_type = "{model_type}"' in out and "load_ckpt_info" in out
    restored, saved_cfg, _ = load_params(str(back))
    assert_same_tree(restored, params)
    assert saved_cfg["model_type"] == model_type
    assert saved_cfg["model"]["num_kv_attention_heads"] == 2

    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((hf_dir / s).exists() for s in shards)
    assert index["metadata"]["total_size"] == sum(np.asarray(x).nbytes for x in jax.tree.leaves(params))
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == [architecture]
    if model_type == "INTERNLM2":
        assert config["architectures"] == ["InternLM2ForCausalLM"] and config["model_type"] == "internlm2"
        assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_internlm2.InternLM2ForCausalLM"
        assert config["auto_map"]["AutoConfig"] == "configuration_internlm2.InternLM2Config"
        assert "model.layers.1.attention.wqkv.weight" in index["weight_map"]
    elif architecture == "LlamaForCausalLM":
        assert config["attention_bias"] is (model_type == "INTERNLM")
        assert "model.layers.1.mlp.gate_proj.weight" in index["weight_map"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # no temporary folder left behind


def test_bf16_export_halves_the_bytes_and_rounds_to_bf16(tmp_path):
    import ml_dtypes
    from safetensors.numpy import load_file

    cfg = tiny_cfg("LLAMA2")
    params = random_params(cfg, seed=2)
    save_params(str(tmp_path / "ckpt"), params, cfg)
    assert (
        convert2hf.main(["--src", str(tmp_path / "ckpt"), "--tgt", str(tmp_path / "hf")]) == 0
    )  # bf16 default
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    tensors = {}
    for name in os.listdir(tmp_path / "hf"):
        if name.endswith(".safetensors"):
            tensors.update(load_file(str(tmp_path / "hf" / name)))
    embed = tensors["model.embed_tokens.weight"]
    assert embed.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(embed, params["embedding"]["embedding"].astype(ml_dtypes.bfloat16))


def test_scanned_checkpoint_exports_like_the_unrolled_one(tmp_path):
    from internevo_jax.model import stack_layers

    cfg = tiny_cfg("INTERNLM2")
    params = random_params(cfg, seed=3)
    scanned_cfg = tiny_cfg("INTERNLM2", scan_layers=True)
    save_params(str(tmp_path / "scanned"), stack_layers(params), scanned_cfg)
    save_params(str(tmp_path / "unrolled"), params, cfg)
    for name in ("scanned", "unrolled"):
        assert (
            convert2hf.main(
                ["--src", str(tmp_path / name), "--tgt", str(tmp_path / f"hf_{name}"), "--dtype", "fp32"]
            )
            == 0
        )
    a = json.loads((tmp_path / "hf_scanned" / "model.safetensors.index.json").read_text())
    b = json.loads((tmp_path / "hf_unrolled" / "model.safetensors.index.json").read_text())
    assert a == b
    for shard in set(a["weight_map"].values()):
        assert (tmp_path / "hf_scanned" / shard).read_bytes() == (
            tmp_path / "hf_unrolled" / shard
        ).read_bytes()


def test_trainer_loads_imported_and_hf_checkpoints(tmp_path):
    """The checkpoint module's loaders accept what hf2internevo writes and the HF folder itself."""
    import flax

    from internevo_jax.checkpoint.restore import read_checkpoint
    from internevo_jax.hf import load_hf_into

    cfg = tiny_cfg("INTERNLM2", scan_layers=True)
    unrolled = random_params(tiny_cfg("INTERNLM2"), seed=4)
    from internevo_jax.model import stack_layers

    params = stack_layers(unrolled)
    save_params(str(tmp_path / "ckpt"), unrolled, tiny_cfg("INTERNLM2"))
    assert (
        convert2hf.main(["--src", str(tmp_path / "ckpt"), "--tgt", str(tmp_path / "hf"), "--dtype", "fp32"])
        == 0
    )
    assert (
        hf2internevo.main(
            ["--src", str(tmp_path / "hf"), "--tgt", str(tmp_path / "back"), "--model_type", "INTERNLM2"]
        )
        == 0
    )

    @flax.struct.dataclass
    class State:
        params: dict

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    zeros = State(params=jax.tree.map(lambda x: jax.numpy.zeros_like(x), params))
    shardings = State(params=jax.tree.map(lambda _: device, params))
    loaded = load_hf_into(zeros, shardings, str(tmp_path / "hf"), cfg, frozenset({"model"}))
    assert_same_tree(loaded.params, jax.tree.map(jax.numpy.asarray, params))

    unrolled_zeros = State(params=jax.tree.map(lambda x: jax.numpy.zeros_like(x), unrolled))
    restored = read_checkpoint(
        str(tmp_path / "back"),
        state=unrolled_zeros,
        shardings=State(params=jax.tree.map(lambda _: device, unrolled)),
        content=frozenset({"model"}),
    )
    assert_same_tree(restored["model"], jax.tree.map(jax.numpy.asarray, unrolled))


@pytest.mark.skipif(
    not os.path.exists(os.path.join(TOKENIZERS, "tokenizer_internlm.model")),
    reason="the InternLM tokenizer is not in shared/tokenizers",
)
def test_tokenizer_is_copied_and_loads_in_transformers(tmp_path):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    cfg = tiny_cfg("LLAMA2", vocab_size=103168)  # the tokenizer's pieces: convert2hf refuses others
    save_params(str(tmp_path / "ckpt"), random_params(cfg), cfg)
    tok = os.path.join(TOKENIZERS, "tokenizer_internlm.model")
    assert (
        convert2hf.main(["--src", str(tmp_path / "ckpt"), "--tgt", str(tmp_path / "hf"), "--tokenizer", tok])
        == 0
    )
    hf_dir = tmp_path / "hf"
    assert (hf_dir / "tokenizer.model").read_bytes() == open(tok, "rb").read()
    tok_cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["bos_token"] == "<s>" and tok_cfg["eos_token"] == "</s>"
    config = json.loads((hf_dir / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    sp = spm.SentencePieceProcessor(model_file=tok)
    text = "Hello world, 你好世界!\n  two  spaces 123"
    assert AutoTokenizer.from_pretrained(str(hf_dir))(text)["input_ids"] == [sp.bos_id()] + sp.encode(text)


def test_internlm2_remote_code_and_tokenizer_map(tmp_path):
    tok = os.path.join(TOKENIZERS, "tokenizer_internlm2.model")
    cfg = tiny_cfg("INTERNLM2", **({"vocab_size": 92544} if os.path.exists(tok) else {}))  # the tokenizer's
    save_params(str(tmp_path / "ckpt"), random_params(cfg), cfg)
    code = tmp_path / "code"
    code.mkdir()
    (code / "modeling_internlm2.py").write_text("# modeling code\n")
    (code / "configuration_internlm2.py").write_text("# config code\n")
    args = ["--src", str(tmp_path / "ckpt"), "--tgt", str(tmp_path / "hf"), "--remote_code", str(code)]
    if os.path.exists(tok):
        args += ["--tokenizer", tok]
    assert convert2hf.main(args) == 0
    assert (tmp_path / "hf" / "modeling_internlm2.py").read_text() == "# modeling code\n"
    if os.path.exists(tok):
        tok_cfg = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
        assert tok_cfg["tokenizer_class"] == "InternLM2Tokenizer"
        assert tok_cfg["auto_map"]["AutoTokenizer"][0] == "tokenization_internlm2.InternLM2Tokenizer"
