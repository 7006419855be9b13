"""Loss scaling and skip-on-overflow through the real train step, with overflows injected on chosen steps."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.data import build_train_loader
from internevo_jax.optim import LrSchedule
from internevo_jax.trainer import build_trainer, fit

OVERFLOW_STEPS = (1, 2, 3, 4, 8)
SCALER = dict(
    fp16=dict(initial_scale=2**10, min_scale=2**8, growth_interval=3),
    growth_factor=2,
    backoff_factor=0.5,
    max_scale=2**12,
    hysteresis=2,
)


def fp16_config(tmp_path, steps=16):
    return config_from_dict(
        {
            "JOB_NAME": "overflow",
            "model": dict(
                num_attention_heads=4,
                hidden_size=32,
                num_layers=2,
                vocab_size=128,
                mlp_ratio=2.0,
                dtype="torch.float16",
                use_flash_attn=False,
            ),
            "data": dict(seq_len=16, micro_num=2, micro_bsz=1, total_steps=steps),
            "parallel": dict(zero1=1),
            "grad_scaler": SCALER,
            "adam": dict(lr=1e-3),
            "lr_scheduler": dict(warmup_ratio=0.25, eta_min=1e-4),
            "run_dir": str(tmp_path / "run"),
        },
        log=lambda *_: None,
    )


def inject(bad_steps):
    bad = jnp.array(bad_steps, jnp.int32)

    def hook(grads, step):
        hit = jnp.any(step == bad)
        return jax.tree.map(lambda g: jnp.where(hit, jnp.inf, g), grads)

    return hook


def reference_scales(overflows, init, min_scale, max_scale, interval, hysteresis):
    """InternEvo's DynamicGradScaler.update, transcribed."""
    scale, growth, hyst, out = init, 0, 0, []
    for ovf in overflows:
        if ovf:
            hyst += 1
            growth = 0
            if hyst >= hysteresis:
                scale = max(scale * 0.5, min_scale)
        else:
            growth += 1
            if growth == interval:
                growth, hyst = 0, 0
                scale = min(scale * 2, max_scale)
        out.append(scale)
    return out


def test_scale_trajectory_skips_and_bit_identical_params(tmp_path):
    cfg = fp16_config(tmp_path)
    devices = jax.devices()[:1]
    trainer = build_trainer(cfg, devices=devices, grad_hook=inject(OVERFLOW_STEPS))
    loader = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    lr = LrSchedule.from_config(cfg)
    scales, counts = [], []
    for step in range(cfg.data.total_steps):
        before = jax.device_get(trainer.state)
        metrics = trainer.step(loader.get_batch(step))
        after = jax.device_get(trainer.state)
        overflow = metrics["overflow"]
        assert overflow == (step in OVERFLOW_STEPS)
        same = [
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before.params))
        ]
        if overflow:  # the whole update is dropped: params, moments, counters
            assert all(same)
            for a, b in zip(jax.tree.leaves(after.opt_state), jax.tree.leaves(before.opt_state)):
                assert np.array_equal(a, b)
        else:
            assert not all(same)
        # the schedule is indexed by successful updates only, and the line shows the next
        # update's rate (InternEvo's): the count after a success, the same count after an overflow
        expected_count = int(before.opt_state[1].count) + (0 if overflow else 1)
        assert float(metrics["lr"]) == pytest.approx(float(lr(expected_count)), rel=1e-6)
        scales.append(float(metrics["loss_scale"]))
        counts.append(int(after.opt_state[1].count))
    overflows = [s in OVERFLOW_STEPS for s in range(cfg.data.total_steps)]
    assert scales == reference_scales(overflows, 2**10, 2**8, 2**12, 3, 2)
    # hand-checked head of the sequence: hysteresis absorbs the first overflow, min_scale clamps the 4th
    assert scales[:9] == [1024, 1024, 512, 256, 256, 256, 256, 512, 512]
    assert counts[-1] == cfg.data.total_steps - len(OVERFLOW_STEPS)
    assert trainer.context.inf_nan_skip_batches == len(OVERFLOW_STEPS)
    assert trainer.context.step == cfg.data.total_steps


def test_fit_counts_skips_and_keeps_consuming_tokens(tmp_path):
    cfg = fp16_config(tmp_path, steps=10)
    result = fit(cfg, devices=jax.devices()[:1], grad_hook=inject(OVERFLOW_STEPS))
    assert result.context.inf_nan_skip_batches == sum(s < 10 for s in OVERFLOW_STEPS)
    records = [json.loads(x) for x in open(f"{result.run_dir}/metrics.jsonl")]
    assert [r["inf_nan_skip_batches"] for r in records][:5] == [0, 1, 2, 3, 4]
    # tokens advance on skipped steps too (InternEvo counts every loaded batch)
    assert [r["num_consumed_tokens"] for r in records] == [32 * (i + 1) for i in range(10)]
    assert all(np.isfinite(result.losses))


def test_reported_grad_norm_is_of_unscaled_gradients(tmp_path):
    from internevo_jax.trainer import make_grads_fn

    cfg = fp16_config(tmp_path, steps=1)
    trainer = build_trainer(cfg, devices=jax.devices()[:1])
    assert float(trainer.state.loss_scale.scale) == 2**10
    batch = build_train_loader(cfg, dp_size=1, dp_ranks=[0]).get_batch(0)
    grads, _, _, _ = jax.jit(make_grads_fn(trainer.model))(trainer.state.params, batch, jnp.float32(2**10))
    want = float(jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree.leaves(grads))))
    metrics = trainer.step(batch)
    assert metrics["grad_norm"] == pytest.approx(want, rel=1e-3)  # a scaled norm would be 1024x larger
