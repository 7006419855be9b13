"""An InternEvo pipeline config runs unchanged: the layers are stacked by themselves, a partial
activation-checkpoint fraction is rounded up (with a log line), and pipeline 4 trains like plain
data parallelism."""

from __future__ import annotations

import jax
import numpy as np

from internevo_jax.config import load_config
from internevo_jax.trainer import fit

# The keys of InternEvo's configs/20B_internlm2.py that shape the run, at tiny sizes.
CONFIG = """
JOB_NAME = "20b_internlm2_tiny"
model_type = "INTERNLM2"
model = dict(checkpoint=0.5, num_chunks=1, num_attention_heads=4, num_kv_attention_heads=2, vocab_size=256,
             hidden_size=64, num_layers=4, mlp_ratio=8 / 3, dtype="torch.float32", norm_type="rmsnorm",
             qk_interleaved=False, no_bias=True)
data = dict(seq_len=32, micro_num=4, micro_bsz=1, total_steps=3, train_folder=None, min_length=0)
ckpt = dict(enable_save_ckpt=False, load_ckpt_info=None, auto_resume=False)
parallel = dict(
    zero1=dict(size=-1),
    tensor=dict(size=1, mode="mtp"),
    pipeline=dict(size=PIPELINE, interleaved_overlap=True, mode="1f1b"),
)
selective_checkpoint = True
selective_checkpoint_offload = False
run_dir = RUN_DIR
"""


def run(tmp_path, pipeline: int, devices: int, extra: str = ""):
    path = tmp_path / f"pp{pipeline}.py"
    text = CONFIG.replace("PIPELINE", str(pipeline)).replace(
        "RUN_DIR", repr(str(tmp_path / f"run{pipeline}"))
    )
    path.write_text(text + extra)
    logs = []
    cfg = load_config(str(path), log=logs.append)
    return cfg, logs, fit(cfg, devices=jax.devices()[:devices]).losses


def run_cfg_is_plain(cfg) -> bool:
    return cfg.parallel.pipeline.size == 1 and cfg.model.scan_layers


def test_internevo_pipeline_config_runs_unchanged_and_matches_data_parallel(tmp_path):
    cfg, logs, pipelined = run(tmp_path, 4, devices=8)  # pipeline 4 x data 2
    assert cfg.model.scan_layers and cfg.model.checkpoint is True
    assert any("model.checkpoint=0.5" in line and "recomputed" in line for line in logs)
    assert any("selective_checkpoint" in line for line in logs if "no effect" in line)
    # the same stacked model (so the same initial weights) on data 2 alone
    plain_cfg, _, plain = run(
        tmp_path, 1, devices=2, extra="model.update(scan_layers=True, checkpoint=True)\n"
    )
    assert run_cfg_is_plain(plain_cfg)
    assert len(pipelined) == 3 and np.all(np.isfinite(pipelined))
    np.testing.assert_allclose(pipelined, plain, rtol=2e-5)
