"""The whole train step compiled by the real TPU compiler (libtpu, abstract devices of a slice)
with the Splash kernel inside: no TPU needed."""

from __future__ import annotations

import re

import pytest

from internevo_jax.config import config_from_dict
from internevo_jax.dry_run import lower_step
from internevo_jax.parallel.topology import topology_devices

pytest.importorskip("libtpu", reason="TPU compiles need libtpu (the test extra installs it)")

KERNELS = {  # forward (keeping its residuals for the backward), dq and dkv: packed rows
    "splash_mha_fwd_segmented_residuals",
    "splash_mha_dq_segmented_no_residuals",
    "splash_mha_dkv_segmented_no_residuals",
}


def tiny_tpu_config():
    """bf16, grouped kv heads (4 over 2), data 2 x tensor 2 on a 4-chip slice."""
    return config_from_dict(
        {
            "model": dict(
                num_attention_heads=4,
                num_kv_attention_heads=2,
                hidden_size=128,
                num_layers=2,
                vocab_size=256,
                mlp_ratio=2.0,
                dtype="torch.bfloat16",
                attn_impl="splash",
                scan_layers=True,
            ),
            "data": dict(seq_len=256, micro_num=2, micro_bsz=1, total_steps=10),
            "parallel": dict(zero1=1, tensor=dict(size=2, mode="mtp")),
            "adam": dict(lr=1e-3),
        },
        log=lambda *_: None,
    )


@pytest.mark.parametrize("topology", ["v5e:2x2", "v6e:2x2"])
def test_train_step_compiles_with_the_mosaic_kernel(topology):
    devices = topology_devices(topology)
    step = lower_step(tiny_tpu_config(), devices)
    assert devices[0].platform == "tpu" and len(devices) == 4
    assert dict(step.env.mesh.shape) == {"pipeline": 1, "data": 2, "expert": 1, "fsdp": 1, "tensor": 2}
    assert step.attention.name == "splash"
    text = step.compile().as_text()
    assert "tpu_custom_call" in text  # a Mosaic kernel, compiled into the partitioned program
    assert set(re.findall(r"splash_mha_\w+", text)) >= KERNELS
