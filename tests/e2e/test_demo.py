"""The demo: real text, a tokenizer trained on the spot, and a loss that falls."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_helpers import REPO, run_train, sets

from internevo_jax.config import load_config
from internevo_jax.preprocess.demo_corpus import build_demo_corpus
from internevo_jax.trainer import fit


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    build_demo_corpus(out, max_text_bytes=1_500_000, log=lambda *_: None)
    return out


def demo_overrides(data_dir, run_dir, steps):
    return [
        f"data.train_folder='{data_dir}/train'",
        f"data.valid_folder='{data_dir}/valid'",
        f"data.tokenizer_path='{data_dir}/tokenizer.model'",
        f"data.total_steps={steps}",
        f"lr_scheduler.total_steps={steps}",
        f"run_dir='{run_dir}'",
    ]


@pytest.mark.slow
def test_demo_cli_trains_and_loss_falls(demo_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        ["--config", str(REPO / "configs/demo.py"), *sets(*demo_overrides(demo_data, run_dir, 60))],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 1.0, losses
    valid = [r for r in records if "val/code_loss" in r]
    assert [r["step"] for r in valid] == [40]
    assert valid[0]["val/en_loss"] < losses[0]


def test_fp16_demo_survives_an_overflow_burst(demo_data, tmp_path):
    steps, burst = 50, range(5, 10)
    cfg = load_config(
        str(REPO / "configs/demo.py"),
        [
            *demo_overrides(demo_data, tmp_path / "run", steps),
            "model.dtype='torch.float16'",
            "data.valid_every=0",
        ],
        log=lambda *_: None,
    )
    bad = jnp.array(list(burst), jnp.int32)

    def hook(grads, step):
        return jax.tree.map(lambda g: jnp.where(jnp.any(step == bad), jnp.nan, g), grads)

    result = fit(cfg, devices=jax.devices()[:1], grad_hook=hook)
    losses = result.losses
    assert result.context.inf_nan_skip_batches == len(burst)
    assert all(np.isfinite(losses))
    records = [json.loads(x) for x in open(f"{result.run_dir}/metrics.jsonl")]
    scales = [r["loss_scale"] for r in records]
    assert scales[0] == 2.0**16 and min(scales) < 2.0**16  # backed off during the burst
    assert np.mean(losses[-5:]) < np.mean(losses[burst.start - 3 : burst.start]) - 0.5, losses
