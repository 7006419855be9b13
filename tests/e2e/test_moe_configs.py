"""InternEvo's five MoE config files run unchanged through the CLI with tiny sizes appended by
`--set` (mock data, 8 CPU devices): each file's routing, top-k, shared experts and parallel layout
are kept, so `parallel.expert` -1 / 8 and Qwen3's isp weight parallelism form real expert-parallel
meshes, and the loss falls with the auxiliary loss on every metrics line."""

from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest
from cli_helpers import REPO, run_train, sets

from internevo_jax.config import load_config
from internevo_jax.model import build_model

STEPS = 6
TINY = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_attention_heads=4",
    "model.vocab_size=256",
    "model.dtype=torch.float32",
    "data.seq_len=64",
    "data.micro_num=2",
    "data.micro_bsz=1",
    "data.min_length=0",
    "data.valid_every=0",
    f"data.total_steps={STEPS}",
    f"lr_scheduler.total_steps={STEPS}",  # the file computes it from its own total_steps
    "adam.lr=3e-3",  # a few steps, so the mock data's repeated patterns show in the loss
    # nothing to load: the files name placeholder checkpoint folders and resume automatically
    "ckpt.load_ckpt_info=None",
    "ckpt.load_ckpt_folder=None",
    "ckpt.auto_resume=False",
]
KV = ["model.num_kv_attention_heads=2"]

# file: (overrides beyond TINY, model type, MoE facts of the built model, mesh axis sizes on 8 devices)
CASES = {
    # 4 experts: expert size -1 is min(dp 8, 4); the rest of the ZeRO group is fsdp
    "7b_moe4_sft.py": (
        [],
        "INTERNLM_MoE",
        dict(num_experts=4, top_k=2, routing="GShard"),
        dict(expert=4, fsdp=2),
    ),
    # top_k unset: InternEvo's default 1; multiple_of 128 rounds the tiny experts' width up
    "1.8b_moe16_sft.py": (
        [],
        "INTERNLM_MoE",
        dict(num_experts=16, top_k=1, routing="GShard", expert_hidden_size=128),
        dict(expert=8, fsdp=1),
    ),
    "8x7b_mixtral.py": (
        KV,
        "MIXTRALMOE",
        dict(num_experts=8, top_k=2, routing="GShard"),
        dict(expert=8, fsdp=1),
    ),
    # 64 experts of top-8 and 8 shared experts joined by a sigmoid gate
    "57b_qwen2_moe.py": (
        KV,
        "QWEN2MOE",
        dict(num_experts=64, top_k=8, routing="GShard", num_shared_experts=8, shared_mix="sigmoid"),
        dict(expert=8, fsdp=1),
    ),
    # 128 experts of top-8, Dropless, one loss over all layers; isp weight parallelism over 8
    # devices whose group the expert group (8) is carved out of
    "qwen3_30b_a3b.py": (
        [*KV, "model.head_dim=16"],
        "QWEN3MOE",
        dict(num_experts=128, top_k=8, routing="Dropless", aux_loss_by_layer=False, num_shared_experts=0),
        dict(expert=8, fsdp=1),
    ),
}


def _mesh(log: str) -> dict:
    return ast.literal_eval(re.search(r"INFO mesh (\{[^}]*\})", log).group(1))


# About a minute each on 2 CPU cores: Mixtral (GShard over the expert axis) and Qwen3 (Dropless
# under isp weight parallelism) run in the fast suite, the other three with the slow tests.
FAST = ("8x7b_mixtral.py", "qwen3_30b_a3b.py")


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)]
)
def test_internevo_moe_config_file_runs(tmp_path, name):
    extra, model_type, facts, mesh = CASES[name]
    overrides = [*TINY, *extra, f"run_dir='{tmp_path}/run'"]
    cfg = load_config(str(REPO / "configs" / name), overrides, log=lambda *_: None)
    assert cfg.model_type == model_type
    moe = build_model(cfg).args.moe
    for key, value in facts.items():
        assert getattr(moe, key) == value, key

    proc = run_train(["--config", f"configs/{name}", *sets(*overrides)], devices=8, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert _mesh(log) == dict(pipeline=1, data=1, tensor=1, **mesh)
    lines = [x for x in log.splitlines() if ",step=" in x and "validation" not in x]
    assert len(lines) == STEPS and all(",moe_loss=" in x for x in lines)

    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0] - 0.3, losses  # mock data repeats: the loss falls at once
    for r in records:
        assert np.isfinite(r["moe_loss"]) and r["moe_loss"] > 0
        load = np.array(r["moe_load"])
        assert load.shape == (2, moe.num_experts)  # [layers, experts], fractions of the choices
        np.testing.assert_allclose(load.sum(-1), 1.0, rtol=1e-5)
        dropped = np.array(r["moe_dropped"])
        assert dropped.shape == (2,) and np.all((dropped >= 0) & (dropped < 1))
        if moe.routing == "Dropless":
            assert np.all(dropped == 0)
