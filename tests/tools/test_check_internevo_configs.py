"""tools/check_internevo_configs.py: each file of an InternEvo configs/ folder runs shrunk, or is refused
with its reason, and the table says which."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# An InternEvo-style cluster config: 7B sizes, tensor 8 x pipeline 4, isp weight 4, legacy ckpt keys.
CLUSTER = """
JOB_NAME = "7b"
model_type = "INTERNLM2_PUBLIC"
SEQ_LEN = 4096
model = dict(checkpoint=0.5, num_attention_heads=32, num_kv_attention_heads=8, vocab_size=92544,
             hidden_size=4096, num_layers=32, mlp_ratio=3.5, dtype="torch.bfloat16", qk_interleaved=False)
data = dict(seq_len=SEQ_LEN, micro_num=4, micro_bsz=2, total_steps=50000, train_folder="/mnt/data/train",
            valid_folder="/mnt/data/valid", valid_every=50)
ckpt = dict(enable_save_ckpt=True, save_ckpt_folder="local:llm_ckpts", load_ckpt_folder="local:llm_ckpts/49",
            checkpoint_every=50)
lr_scheduler = dict(total_steps=data["total_steps"], warmup_ratio=0.01)
parallel = dict(zero1=dict(size=8), tensor=dict(size=8, mode="isp"), pipeline=dict(size=4, mode="1F1B"),
                weight=dict(size=4, overlap=True))
selective_checkpoint = True
"""


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "check_configs", ROOT / "tools" / "check_internevo_configs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_cluster_config_runs_shrunk_and_a_missing_feature_is_refused(tmp_path, capsys):
    folder = tmp_path / "configs"
    (folder / "_base_").mkdir(parents=True)
    (folder / "_base_" / "runtime.py").write_text("data = dict()\n")  # building blocks are not checked
    (folder / "7B_cluster.py").write_text(CLUSTER)
    (folder / "7B_2d.py").write_text(CLUSTER + "parallel['sequence_2D'] = dict(enable=True, head_size=2)\n")
    tool = load_tool()
    assert [p.name for p in tool.config_files(folder)] == ["7B_2d.py", "7B_cluster.py"]
    assert tool.main([str(folder), "--out", str(tmp_path / "table.md")]) == 0
    rows = {
        r.split("|")[1].strip(" `"): r.split("|")[2].strip() for r in capsys.readouterr().out.splitlines()[2:]
    }
    assert rows == {"7B_2d.py": "refused", "7B_cluster.py": "runs"}
    table = (tmp_path / "table.md").read_text()
    assert "2D sequence parallelism" in table and "losses " in table
    assert not list(folder.glob("_shrunk_*"))  # the shrunk copies are removed
