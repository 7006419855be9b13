"""The programmatic API: the example script matches the CLI, and a user's loss trains as written."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.initialize import (
    build_train_loader_with_data_type,
    initialize_model,
    initialize_optimizer,
    initialize_parallel,
    initialize_trainer,
)
from internevo_jax.preprocess.demo_corpus import build_demo_corpus

REPO = Path(__file__).resolve().parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location("custom_train", REPO / "examples" / "custom_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args, cwd):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_example_with_default_loss_matches_the_cli(tmp_path):
    data = tmp_path / "demo"
    build_demo_corpus(data, max_text_bytes=600_000, log=lambda *_: None)
    common = ["--config", str(REPO / "configs/demo.py"), "--launcher", "local"]
    for key, value in [
        ("data.train_folder", f"'{data}/train'"),
        ("data.valid_folder", f"'{data}/valid'"),
        ("data.total_steps", "5"),
        ("data.valid_every", "0"),
    ]:
        common += ["--set", f"{key}={value}"]
    cli = run(["-m", "internevo_jax.train", *common, "--set", f"run_dir='{tmp_path / 'cli'}'"], REPO)
    assert cli.returncode == 0, cli.stderr[-3000:]
    ex = run([str(REPO / "examples/custom_train.py"), *common, "--set", f"run_dir='{tmp_path / 'ex'}'"], REPO)
    assert ex.returncode == 0, ex.stderr[-3000:]
    cli_losses = [
        json.loads(x)["loss"] for x in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()
    ]
    ex_records = [json.loads(x) for x in (tmp_path / "ex" / "custom_metrics.jsonl").read_text().splitlines()]
    assert len(cli_losses) == 5
    assert [r["loss"] for r in ex_records] == cli_losses  # bit-identical
    shares = [r["code_share"] for r in ex_records]  # the example's own metric
    assert all(0.0 <= s <= 1.0 for s in shares) and any(s > 0 for s in shares)


def test_z_loss_matches_numpy():
    loss_fn = load_example().smoothed_ce_with_z_loss(0.1, 1e-2)
    rng = np.random.default_rng(0)
    logits = (3 * rng.normal(size=(2, 6, 9))).astype(np.float32)
    labels = rng.integers(0, 9, size=(2, 6)).astype(np.int32)
    labels[1, :2] = -100
    loss, extras = loss_fn(jnp.asarray(logits), jnp.asarray(labels), {})
    x = logits.astype(np.float64)
    logz = np.log(np.exp(x).sum(-1))
    valid = labels != -100
    nll = logz - np.take_along_axis(x, np.maximum(labels, 0)[..., None], -1)[..., 0]
    smooth = logz - x.mean(-1)
    ce = ((0.9 * nll + 0.1 * smooth) * valid).sum() / valid.sum()
    z = 1e-2 * (logz**2 * valid).sum() / valid.sum()
    assert float(loss) == pytest.approx(ce + z, rel=1e-5)
    assert float(extras["z_loss"]) == pytest.approx(z, rel=1e-5)


def mean_logz_sq(trainer, batch):
    logits = trainer.model.apply(
        {"params": trainer.state.params},
        batch["input_ids"][0],
        batch["positions"][0],
        batch["segment_ids"][0],
    )
    return float(jnp.mean(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1) ** 2))


def test_custom_loss_changes_training_as_expected():
    """A strong z-loss drives logsumexp(logits) towards 0; the plain loss does not."""
    cfg = config_from_dict(
        {
            "model": dict(
                num_attention_heads=2,
                hidden_size=32,
                num_layers=1,
                vocab_size=64,
                mlp_ratio=2.0,
                dtype="torch.float32",
                use_flash_attn=False,
            ),
            "data": dict(seq_len=16, micro_num=1, micro_bsz=2, total_steps=30),
            "parallel": dict(zero1=1),
            "adam": dict(lr=1e-2),
        },
        log=lambda *_: None,
    )
    example = load_example()
    results = {}
    for name, criterion in [("plain", None), ("zloss", example.smoothed_ce_with_z_loss(0.0, 1.0))]:
        env = initialize_parallel(cfg, jax.devices()[:1])
        model, params = initialize_model(cfg, env)
        loader, types = build_train_loader_with_data_type(cfg, env)
        optimizer, beta2, lr = initialize_optimizer(cfg)
        trainer = initialize_trainer(
            cfg,
            env,
            model,
            params,
            optimizer,
            criterion,
            lr_scheduler=lr,
            beta2_scheduler=beta2,
            dataset_types=types,
        )
        probe = loader.get_batch(0)
        before = mean_logz_sq(trainer, probe)
        for step in range(30):
            metrics = trainer.step(loader.get_batch(step))
        results[name] = (before, mean_logz_sq(trainer, probe), metrics)
    assert results["zloss"][0] == pytest.approx(results["plain"][0])  # same start
    assert results["zloss"][1] < 0.5 * results["plain"][1]
    assert results["zloss"][2]["z_loss"] > 0 and "z_loss" not in results["plain"][2]
    assert "tokens/mock" in results["plain"][2] or types == ()


def test_default_parser_takes_user_arguments():
    from internevo_jax.initialize import get_default_parser

    parser = get_default_parser()
    parser.add_argument("--my_flag", type=int, default=3)
    args = parser.parse_args(
        [
            "--config",
            "c.py",
            "--launcher",
            "torch",
            "--seed",
            "5",
            "--set",
            "data.micro_bsz=2",
            "--my_flag",
            "7",
            "--profiling",
        ]
    )
    assert (args.config, args.launcher, args.seed, args.my_flag, args.profiling) == (
        "c.py",
        "torch",
        5,
        7,
        True,
    )
    assert args.overrides == ["data.micro_bsz=2"]
    defaults = parser.parse_args([])
    assert (defaults.launcher, defaults.port, defaults.my_flag) == ("slurm", 8888, 3)  # InternEvo's defaults
