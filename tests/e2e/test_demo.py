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


@pytest.mark.slow
def test_moe_demo_cli_trains_every_expert(demo_data, tmp_path):
    """configs/demo_moe.py (`make demo-moe`): a 4-expert top-2 Mixtral learns the demo data, the
    auxiliary loss is on every metrics line and no expert of any layer is left without tokens."""
    steps, run_dir = 50, tmp_path / "run"
    proc = run_train(
        ["--config", str(REPO / "configs/demo_moe.py"), *sets(*demo_overrides(demo_data, run_dir, steps))],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if ",step=" in x and "validation" not in x]
    assert len(lines) == steps and all(",moe_loss=" in x for x in lines)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    losses = [r["loss"] for r in train]
    assert len(losses) == steps and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    assert all(np.isfinite(r["moe_loss"]) for r in train)
    # [step, layer, expert]: the fraction of the token choices each expert was picked for. The
    # routers start near uniform, then collapse onto two experts per layer for a few steps at the
    # demo's learning rate, and the load-balancing loss spreads the tokens out again.
    load = np.array([r["moe_load"] for r in train])
    assert load.shape == (steps, 4, 4)
    np.testing.assert_allclose(load.sum(-1), 1.0, rtol=1e-5)
    assert np.all(load.mean(0) > 0.05), load.mean(0)  # over the run every expert takes its share
    assert np.all(load[-1] > 0), load[-1]  # and at the end every expert of every layer has tokens


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
