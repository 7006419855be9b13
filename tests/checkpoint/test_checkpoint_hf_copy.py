"""ckpt.enable_internevo2hf_ckpt: a Hugging Face copy <save_ckpt_folder>/<step>_hf beside each regular
checkpoint, loaded by transformers' own LlamaForCausalLM and compared with our logits."""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ckpt_helpers import CLI_CONFIG, cli_env, make_bucket, tiny_config

from internevo_jax.checkpoint import MARKER, CheckpointError
from internevo_jax.checkpoint.model_files import load_params
from internevo_jax.model import build_model
from internevo_jax.trainer import fit

TOKENIZER = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "tokenizers", "tokenizer_internlm.model"
)
TOKENS = np.random.default_rng(0).integers(0, 128, (2, 12))


@pytest.fixture(autouse=True)
def _full_precision():
    # fp32 logits are compared with torch's: no reduced-precision matmuls on the JAX side
    with jax.default_matmul_precision("highest"):
        yield


def _cfg(tmp_path, total_steps=4, model_type="INTERNLM", model=None, parallel=None, data=None, **ckpt):
    sections = dict(
        run_dir=str(tmp_path / "run"),
        data=dict(total_steps=total_steps, **(data or {})),
        lr_scheduler=dict(total_steps=total_steps),
        ckpt=dict(checkpoint_every=2, enable_internevo2hf_ckpt=True, **ckpt),
    )
    if parallel:
        sections["parallel"] = parallel
    return tiny_config(model_type=model_type, model=model or {}, **sections)


def _ours(cfg, params) -> np.ndarray:
    model = build_model(cfg)
    return np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(TOKENS, jnp.int32)))


def _hf(folder) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert isinstance(model, LlamaForCausalLM)  # transformers' own class: INTERNLM exports as LLaMA
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


def _host(tree):
    return jax.tree.map(np.asarray, tree)  # gathers every shard of a sharded array


def _assert_copy_matches(cfg, folder, params):
    np.testing.assert_allclose(_hf(folder), _ours(cfg, params), atol=2e-5, rtol=1e-5)


def test_copy_beside_each_checkpoint_matches_transformers(tmp_path):
    tokenizer = TOKENIZER if os.path.isfile(TOKENIZER) else None
    cfg = _cfg(tmp_path, data=dict(tokenizer_path=tokenizer), oss_snapshot_freq=1)
    result = fit(cfg, devices=jax.devices()[:1])

    root = tmp_path / "run" / "checkpoints"
    assert sorted(os.listdir(root)) == ["2", "2_hf", "4", "4_hf", "snapshot"]  # nothing half-written
    assert not [p for p in (root / "snapshot").rglob("*_hf")]  # snapshots get no copy
    for step in (2, 4):
        copy = root / f"{step}_hf"
        assert (root / str(step) / MARKER).exists()
        assert {"config.json", "generation_config.json", "model.safetensors.index.json"} <= set(
            os.listdir(copy)
        )
        if tokenizer:
            assert (copy / "tokenizer.model").read_bytes() == open(tokenizer, "rb").read()
        params, _, _ = load_params(str(root / str(step)))
        _assert_copy_matches(cfg, str(copy), params)
    # fp32 model -> fp32 copy (the model's dtype, as InternEvo's copy keeps it)
    assert json.loads((root / "4_hf" / "config.json").read_text())["torch_dtype"] == "float32"
    _assert_copy_matches(cfg, str(root / "4_hf"), _host(result.state.params))
    assert not np.allclose(_hf(str(root / "2_hf")), _hf(str(root / "4_hf")))


def test_sharded_params_are_exported_whole(tmp_path):
    parallel = dict(zero1=dict(size=-1, fsdp=True), tensor=dict(size=2, mode="mtp"))
    cfg = _cfg(tmp_path, parallel=parallel)
    result = fit(cfg, devices=jax.devices()[:4])

    leaves = jax.tree.leaves(result.state.params)
    assert any(not leaf.sharding.is_fully_replicated for leaf in leaves)
    root = tmp_path / "run" / "checkpoints"
    _assert_copy_matches(cfg, str(root / "4_hf"), _host(result.state.params))
    params, _, _ = load_params(str(root / "2"))
    _assert_copy_matches(cfg, str(root / "2_hf"), params)


def test_failed_copy_is_logged_and_training_goes_on(tmp_path, monkeypatch, package_log):
    import internevo_jax.hf.export as export

    real, calls = export.write_sharded, []

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on the test's disk")
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "write_sharded", first_fails)
    cfg = _cfg(tmp_path)
    fit(cfg, devices=jax.devices()[:1])

    root = tmp_path / "run" / "checkpoints"
    assert sorted(os.listdir(root)) == ["2", "4", "4_hf"]  # no 2_hf, no temporary folder left
    assert (root / "2" / MARKER).exists() and (root / "4" / MARKER).exists()
    errors = [r.getMessage() for r in package_log.records if r.levelno == logging.ERROR]
    assert any("could NOT be written to" in m and str(root / "2_hf") in m for m in errors), errors


def test_model_without_hf_class_is_refused_before_training(tmp_path):
    moe = dict(num_experts=2, top_k=1, num_kv_attention_heads=2)
    cfg = _cfg(tmp_path, model_type="INTERNLM_MoE", model=moe)
    with pytest.raises(CheckpointError, match="ckpt.enable_internevo2hf_ckpt") as err:
        fit(cfg, devices=jax.devices()[:1])
    assert "'INTERNLM_MoE'" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # not one step ran


def test_s3_copy_is_uploaded_and_pruned_with_its_checkpoint(tmp_path, s3_env, s3_endpoint):
    from test_checkpoint_s3 import _client, _keys

    make_bucket(s3_endpoint, "hfcopy")
    stage = tmp_path / "stage"
    cfg = _cfg(
        tmp_path,
        save_ckpt_folder="boto3:s3://hfcopy/run",
        async_upload_tmp_folder=str(stage),
        keep_last_n=1,
    )
    result = fit(cfg, devices=jax.devices()[:2])

    keys = _keys(s3_endpoint, "hfcopy", "run/")
    assert not [k for k in keys if k.startswith(("run/2/", "run/2_hf/"))]  # pruned together
    copy = [k for k in keys if k.startswith("run/4_hf/")]
    assert "run/4_hf/config.json" in copy and "run/4_hf/model.safetensors.index.json" in copy
    local = tmp_path / "downloaded"
    local.mkdir()
    for key in copy:
        _client(s3_endpoint).download_file("hfcopy", key, str(local / key.rsplit("/", 1)[-1]))
    _assert_copy_matches(cfg, str(local), _host(result.state.params))
    scratch = [p for p in stage.rglob("*") if "_hf" in p.name]
    assert not scratch  # the local copy made for the upload is gone


@pytest.mark.slow
def test_two_processes_process_0_writes_the_copy(tmp_path, jax_cache_dir):
    from test_checkpoint_multiprocess import _run_two

    from internevo_jax.config import load_config

    config_file = tmp_path / "cli.py"
    config_file.write_text(CLI_CONFIG)
    folder = tmp_path / "ckpts"
    sets = [
        "ckpt.checkpoint_every=4",
        f"ckpt.save_ckpt_folder=local:{folder}",
        "ckpt.enable_internevo2hf_ckpt=True",
        "data.total_steps=4",
        "parallel.zero1.fsdp=True",
    ]
    text = _run_two(config_file, tmp_path / "run", sets, cli_env(cache_dir=jax_cache_dir), tmp_path)

    assert sorted(os.listdir(folder)) == ["4", "4_hf"]
    assert (tmp_path / "rank0.log").read_text().count("Hugging Face copy of step 4 written") == 1
    assert "Hugging Face copy" not in (tmp_path / "rank1.log").read_text(), text[-2000:]
    cfg = load_config(str(config_file), log=lambda *a: None)
    params, _, _ = load_params(str(folder / "4"))
    _assert_copy_matches(cfg, str(folder / "4_hf"), params)
