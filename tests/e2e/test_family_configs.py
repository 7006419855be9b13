"""InternEvo's config files of the dense families run unchanged (tiny sizes appended, mock data, 8 CPU
devices), each new family learns on the demo data, and the parallel layouts of the new head_dim,
bias and tie paths train like one device."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from cli_helpers import REPO

from internevo_jax.config import load_config
from internevo_jax.model import build_model
from internevo_jax.preprocess.demo_corpus import build_demo_corpus
from internevo_jax.trainer import fit

TINY = """
# ---- appended by the test: tiny sizes, mock data, nothing to load, a layout for 8 CPU devices
model.update(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=256, dtype="torch.float32")
data.update(seq_len=32, micro_num=2, micro_bsz=1, total_steps=3, min_length=0, train_folder=None, valid_folder=None)
ckpt.update(load_ckpt_info=None, enable_save_ckpt=False)
"""

# What each file's run appends beyond TINY (its own layout is for a cluster).
EXTRA = {
    "7b_qwen2.py": "model.update(num_kv_attention_heads=2, use_sliding_window=True, sliding_window=8, max_window_layers=1)\n",
    "8b_internlm3.py": (
        "model.update(num_kv_attention_heads=2)\n"
        'parallel["weight"]["size"] = 2  # isp weight parallelism, over 2 of the 8 devices\n'
    ),
    "7b_gemma.py": "model.update(num_kv_attention_heads=4, head_dim=32)\n",
    "7b_baichuan2.py": "",
    "70b_sft_llama2.py": (
        "model.update(num_kv_attention_heads=2)\n"  # the pipeline stacks the layers by itself
        "parallel.update(tensor=2, pipeline=dict(size=2, interleaved_overlap=True))\n"
    ),
}
EXPECTED = {
    "7b_qwen2.py": ("QWEN2", dict(qkv_bias=True, out_bias=False, sliding_window=8, max_window_layers=1)),
    "8b_internlm3.py": ("INTERNLM3", dict(qkv_layout="separate", rope_base=5e7, num_kv_heads=2)),
    "7b_gemma.py": (
        "GEMMA",
        dict(head_dim=32, norm_unit_offset=True, tie_embeddings=True, mlp_activation="gelu_tanh"),
    ),
    "7b_baichuan2.py": ("BAICHUAN2", dict(qkv_layout="concat", norm_head=True, out_bias=False)),
    "70b_sft_llama2.py": ("LLAMA", dict(num_kv_heads=2, qkv_bias=False)),
}


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_internevo_config_file_runs(tmp_path, name):
    text = (REPO / "configs" / name).read_text() + TINY + EXTRA[name] + f'run_dir = "{tmp_path}/run"\n'
    path = tmp_path / name
    path.write_text(text)
    cfg = load_config(str(path), log=lambda *_: None)
    model_type, facts = EXPECTED[name]
    assert cfg.model_type == model_type
    args = build_model(cfg).args
    for key, value in facts.items():
        assert getattr(args, key) == value, key
    result = fit(cfg, devices=jax.devices()[:8])
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    # Mock data is random tokens: the loss starts near ln(vocab) for the 0.02 init.
    assert abs(result.losses[0] - np.log(256)) < 0.5


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    build_demo_corpus(out, max_text_bytes=1_500_000, log=lambda *_: None)
    return out


FAMILY_KEYS = {
    "QWEN2": [],
    "QWEN3": ["model.head_dim=48"],
    "INTERNLM3": ["model.num_kv_attention_heads=2"],
    "GEMMA": ["model.head_dim=48", "model.use_swiglu=False", "model.add_unit_offset=True"],
    "BAICHUAN2": [],
}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(FAMILY_KEYS))
def test_new_family_learns_the_demo_data(demo_data, tmp_path, model_type):
    steps = 30
    cfg = load_config(
        str(REPO / "configs/demo.py"),
        [
            f"model_type='{model_type}'",
            "model.num_layers=2",
            "model.hidden_size=128",
            "data.seq_len=128",
            "data.num_worker=0",
            f"data.train_folder='{demo_data}/train'",
            f"data.tokenizer_path='{demo_data}/tokenizer.model'",
            "data.valid_every=0",
            f"data.total_steps={steps}",
            f"lr_scheduler.total_steps={steps}",
            "ckpt.enable_save_ckpt=False",
            f"run_dir='{tmp_path}/run'",
            *FAMILY_KEYS[model_type],
        ],
        log=lambda *_: None,
    )
    losses = fit(cfg, devices=jax.devices()[:1]).losses
    assert len(losses) == steps
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses
