"""Loading config files: configs/7b_sft.py unchanged, InternEvo defaults, helpers, to_dict, reporting."""

import json
from pathlib import Path

import jax.numpy as jnp
import pytest

from internevo_jax.config import (
    Config,
    ConfigError,
    LoadCkptInfo,
    config_from_dict,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
SFT = REPO / "configs" / "7b_sft.py"


@pytest.fixture(scope="module")
def sft_and_log():
    lines = []
    return load_config(SFT, log=lines.append), lines


def test_7b_sft_loads_with_its_values(sft_and_log):
    cfg, _ = sft_and_log
    assert isinstance(cfg, Config)
    assert cfg.source_path == str(SFT)
    assert cfg.job_name == "7b_train"
    assert cfg.model_type == "INTERNLM"  # absent from the file: InternEvo's default

    d = cfg.data
    assert (d.seq_len, d.micro_num, d.micro_bsz) == (2048, 4, 2)
    assert d.packed_length == 2048 * 2
    assert d.gradient_accumulation == 4 and d.batch_size == 4
    assert (d.valid_micro_num, d.valid_every, d.total_steps, d.min_length) == (4, 50, 50000, 50)
    assert d.pack_sample_into_one is False
    assert d.skip_batches == "" and d.rampup_batch_size == ""
    assert d.train_folder is None  # absent on purpose -> mock data
    assert d.empty_cache_and_diag_interval == 10 and d.diag_outlier_ratio == 1.1

    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.vocab_size) == (32, 4096, 32, 103168)
    assert m.num_kv_attention_heads == 32
    assert m.mlp_ratio == pytest.approx(8 / 3)
    assert m.mlp_hidden_size == 11008
    assert m.head_dim == 128
    assert m.checkpoint is False and m.checkpoint_layers == 0
    assert m.dtype == "torch.float16"
    assert m.compute_dtype == jnp.float16 and m.matmul_precision is None
    assert m.norm_type == "rmsnorm" and m.layer_norm_epsilon == 1e-5
    assert m.embed_split_hidden is True and m.parallel_output is True and m.use_flash_attn is True
    assert m.embed_grad_scale == 1.0 and m.num_chunks == 1 and m.apply_post_layer_norm is False

    k = cfg.ckpt
    assert k.enable_save_ckpt is False
    assert k.save_ckpt_folder == "local:llm_ckpts"
    assert k.load_ckpt_folder == "local:llm_ckpts/"
    # ckpt_type "internlm" (old InternLM configs) is InternEvo's own format.
    assert k.load_ckpt_info == LoadCkptInfo(
        path="local:llm_ckpts/xxxx", content=("model",), ckpt_type="internevo"
    )
    assert (k.checkpoint_every, k.oss_snapshot_freq, k.async_upload) == (50, 25, True)
    assert k.async_upload_tmp_folder == "/dev/shm/internlm_tmp_ckpt/"

    g = cfg.grad_scaler
    assert (g.fp16.initial_scale, g.fp16.min_scale, g.fp16.growth_interval) == (2**16, 1, 1000)
    assert (g.growth_factor, g.backoff_factor, g.max_scale, g.hysteresis) == (2, 0.5, 2**24, 2)
    assert cfg.hybrid_zero_optimizer.clip_grad_norm == 1.0
    assert cfg.hybrid_zero_optimizer.reduce_bucket_size == 512 * 1024 * 1024
    assert cfg.loss.label_smoothing == 0.0
    a = cfg.adam
    assert (a.lr, a.adam_beta1, a.adam_beta2, a.adam_beta2_c, a.adam_eps, a.weight_decay) == (
        1e-4,
        0.9,
        0.95,
        0.0,
        1e-8,
        0.01,
    )
    s = cfg.lr_scheduler
    assert (s.total_steps, s.init_steps, s.warmup_ratio, s.eta_min) == (50000, 0, 0.01, 1e-5)
    assert (cfg.beta2_scheduler.init_beta2, cfg.beta2_scheduler.c) == (0.95, 0.0)

    p = cfg.parallel  # old form: zero1=8, no tensor, sequence_parallel=False
    assert (p.zero1.size, p.zero1.fsdp) == (8, False)
    assert (p.tensor.size, p.tensor.mode) == (1, "mtp")
    assert (p.pipeline.size, p.pipeline.interleaved_overlap) == (1, True)
    assert p.weight.size == 1 and p.sequence_parallel is False

    assert cfg.cudnn_deterministic is False and cfg.cudnn_benchmark is False
    assert cfg.monitor.alert.enable_feishu_alert is False
    assert cfg.variables["SEQ_LEN"] == 2048 and cfg.variables["DO_ALERT"] is False
    assert cfg.variables["JOB_NAME"] == "7b_train"
    assert cfg.run_dir == "runs/7b_train"
    assert cfg.seed == 1024


def test_7b_sft_defaults_of_absent_keys_follow_internevo(sft_and_log):
    cfg, _ = sft_and_log
    # internlm/initialize/launch.py args_sanity_check: auto_resume defaults to True,
    # stop_file_path to None, data.type to "tokenized", fixed_random_dataset_seqlen to True.
    assert cfg.ckpt.auto_resume is True
    assert cfg.ckpt.stop_file_path is None
    assert cfg.data.type == "tokenized"
    assert cfg.data.fixed_random_dataset_seqlen is True
    # internlm/model/modeling_internlm.py build_model_with_cfg: rope_base=10000, max_position_embeddings=2048.
    assert cfg.model.rope_base == 10000
    assert cfg.model.max_position_embeddings == 2048
    # args_sanity_check: qk_interleaved defaults to False when adapt_hf is absent.
    assert cfg.model.qk_interleaved is False
    # our extensions
    assert (cfg.model.attn_impl, cfg.model.scan_layers, cfg.model.remat_policy) == (
        "auto",
        False,
        "full",
    )
    assert cfg.adam.exclude_norm_and_bias_from_decay is False
    assert cfg.ckpt.keep_last_n is None


def test_no_config_file_means_internevo_defaults():
    cfg = load_config(None, log=lambda line: pytest.fail(f"unexpected log: {line}"))
    assert cfg.source_path is None
    # args_sanity_check (internlm/initialize/launch.py):
    assert cfg.job_name == "AnonymousJob"
    assert cfg.model_type == "INTERNLM"
    assert cfg.data.micro_num == 1
    assert cfg.data.min_length == 0
    assert cfg.data.valid_every == 0  # evaluation off
    assert cfg.data.valid_micro_num == cfg.data.micro_num
    assert cfg.data.train_folder is None and cfg.data.valid_folder is None
    assert cfg.data.empty_cache_and_diag_interval == 50
    assert cfg.model.dtype == "torch.float16"  # "dtype is not set, use torch.float16 by default"
    assert cfg.model.use_flash_attn is True
    assert cfg.ckpt.enable_save_ckpt is True and cfg.ckpt.async_upload is False
    assert cfg.hybrid_zero_optimizer.clip_grad_norm == 0.0  # .get("clip_grad_norm", 0.0)
    assert cfg.hybrid_zero_optimizer.overlap_sync_grad is False
    assert (cfg.parallel.zero1.size, cfg.parallel.zero1.fsdp) == (-1, False)
    assert (cfg.parallel.tensor.size, cfg.parallel.tensor.mode) == (1, "mtp")
    assert (cfg.parallel.pipeline.size, cfg.parallel.pipeline.interleaved_overlap) == (1, False)
    assert cfg.monitor.tensorboard.queue_max_length == 1
    # internlm/model/modeling_internlm.py build_model_with_cfg defaults:
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.vocab_size) == (48, 2048, 50304)
    assert (cfg.model.num_attention_heads, cfg.model.mlp_ratio, cfg.model.num_chunks) == (32, 4.0, 1)
    assert cfg.model.embed_split_hidden is False
    # launch.py get_default_parser: --seed 1024; build_dataloader: num_worker 4.
    assert cfg.seed == 1024 and cfg.data.seed == 1024 and cfg.data.num_worker == 4
    # ours: checkpoints land in the run folder when saving is on and no folder is given.
    assert cfg.run_dir == "runs/AnonymousJob"
    assert cfg.ckpt.save_ckpt_folder == "local:runs/AnonymousJob/checkpoints"
    assert cfg.lr_scheduler.total_steps == cfg.data.total_steps


def test_packed_length_is_forced(capsys):
    cfg = config_from_dict({"data": dict(seq_len=512, micro_bsz=3, packed_length=7)})
    assert cfg.data.packed_length == 1536
    assert "data.packed_length" in cfg.no_effect_keys
    assert "data.packed_length" in capsys.readouterr().out  # default log is print


def test_no_effect_keys_reported_once_in_one_line(sft_and_log):
    cfg, lines = sft_and_log
    assert len(lines) == 1
    line = lines[0]
    assert "no effect in JAX" in line and str(SFT) in line
    for key in (
        "cudnn_benchmark",
        "cudnn_deterministic",
        "hybrid_zero_optimizer.overlap_sync_grad",
        "hybrid_zero_optimizer.reduce_bucket_size",
        "data.empty_cache_and_diag_interval",
        "model.embed_split_hidden",
        "parallel.pipeline.interleaved_overlap",
    ):
        assert key in cfg.no_effect_keys
        assert line.count(key) == 1
    # the staging folder of checkpoint uploads to S3: it has an effect
    assert "ckpt.async_upload_tmp_folder" not in cfg.no_effect_keys
    assert len(set(cfg.no_effect_keys)) == len(cfg.no_effect_keys)
    # meaningful keys are not reported
    for key in (
        "data.seq_len",
        "model.use_flash_attn",
        "hybrid_zero_optimizer.clip_grad_norm",
        "ckpt.async_upload",
        "monitor.alert.feishu_alert_address",  # alerts and TensorBoard are written here
        "monitor.tensorboard.queue_max_length",
    ):
        assert key not in cfg.no_effect_keys


def test_no_effect_parent_key_covers_children():
    lines = []
    sequence_2d = dict(enable=False, head_size=2, context_size=4)
    cfg = config_from_dict({"parallel": dict(sequence_2D=sequence_2d)}, log=lines.append)
    assert cfg.no_effect_keys == ("parallel.sequence_2D",)
    assert cfg.parallel.sequence_2D == sequence_2d
    assert len(lines) == 1


def test_to_dict_round_trips_through_json(sft_and_log):
    cfg, _ = sft_and_log
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["job_name"] == "7b_train"
    assert d["data"]["packed_length"] == 4096
    assert d["model"]["compute_dtype"] == "float16" and d["model"]["mlp_hidden_size"] == 11008
    assert d["parallel"]["zero1"] == {"size": 8, "fsdp": False}
    assert d["ckpt"]["load_ckpt_info"]["content"] == ["model"]
    assert d["source_path"] == str(SFT)


def test_helper_files_import_relative_to_the_config(tmp_path):
    (tmp_path / "sizes_helper.py").write_text("HIDDEN = 256\nLAYERS = 2\n")
    (tmp_path / "cfg.py").write_text(
        "import os\n"
        "from sizes_helper import HIDDEN, LAYERS\n"
        "def _double(x):\n    return 2 * x\n"
        "class Thing:\n    pass\n"
        "_private = 'skipped'\n"
        "NOT_JSON = object()\n"
        "model = dict(hidden_size=HIDDEN, num_layers=_double(LAYERS), num_attention_heads=4)\n"
    )
    cfg = load_config(tmp_path / "cfg.py", log=lambda _: None)
    assert (cfg.model.hidden_size, cfg.model.num_layers) == (256, 4)
    assert cfg.variables == {"HIDDEN": 256, "LAYERS": 2}  # JSON-able upper-case names only
    import sys

    assert "sizes_helper" not in sys.modules  # helper modules do not leak into the next load
    assert str(tmp_path) not in sys.path


def test_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.py")
    (tmp_path / "cfg.txt").write_text("data = dict()\n")
    with pytest.raises(ConfigError, match=r"\.py"):
        load_config(tmp_path / "cfg.txt")
    (tmp_path / "broken.py").write_text("data = dict(seq_len=SEQ)\n")
    with pytest.raises(ConfigError, match=r"broken\.py.*NameError.*SEQ"):
        load_config(tmp_path / "broken.py")


def test_internevo_internlm2_and_llama2_style_configs_load():
    # The keys InternEvo's configs/7B_internlm2.py and 7B_llama2.py use beyond 7B_sft.
    common = dict(
        JOB_NAME="7b_internlm2_train",
        model_type="INTERNLM2_PUBLIC",
        use_fp32_norm=False,
        ckpt=dict(
            enable_save_ckpt=False,
            auto_resume=False,
            universal_ckpt=dict(enable=False, aysnc_save=True, broadcast_load=False),
        ),
        data=dict(seq_len=2048, micro_num=4, micro_bsz=1, train_folder=None, valid_folder=None),
        model=dict(
            checkpoint=False,
            num_chunks=1,
            num_attention_heads=32,
            num_kv_attention_heads=8,
            hidden_size=4096,
            num_layers=32,
            no_bias=True,
            mlp_ratio=3.5,
            vocab_size=92544,
            dtype="torch.bfloat16",
            qk_interleaved=False,
            rope_base=1000000,
        ),
        monitor=dict(
            alert=dict(enable_feishu_alert=False, alert_file_path="llm_alter/x_alert.log"),
            tensorboard=dict(queue_max_length=10),
        ),
        generation=dict(ckpt_folder="/path", batch_size=1, eos_id=[2, 0], temperature=1.0),
    )
    internlm2 = config_from_dict(
        {
            **common,
            "parallel": dict(
                zero1=dict(size=-1),
                tensor=dict(size=2, mode="isp"),
                pipeline=dict(size=1, interleaved_overlap=True, mode="1f1b"),
                weight=dict(size=2, overlap=True),
            ),
        },
        log=lambda _: None,
    )
    assert internlm2.model_type == "INTERNLM2_PUBLIC"
    assert internlm2.model.num_kv_attention_heads == 8 and internlm2.model.no_bias is True
    assert internlm2.model.rope_base == 1e6 and internlm2.model.mlp_hidden_size == 14336
    assert internlm2.parallel.tensor.mode == "isp" and internlm2.parallel.sequence_parallel is True
    assert internlm2.parallel.pipeline.mode == "1F1B"
    assert internlm2.ckpt.auto_resume is False and internlm2.ckpt.universal_ckpt["aysnc_save"] is True
    assert internlm2.monitor.alert.alert_file_path == "llm_alter/x_alert.log"
    assert internlm2.model.compute_dtype == jnp.bfloat16
    llama2 = config_from_dict(
        {
            **common,
            "model_type": "LLAMA2",
            "parallel": dict(
                zero1=dict(size=4),
                tensor=dict(size=1, mode="isp"),
                pipeline=dict(size=1, interleaved_overlap=True),
                weight=dict(size=2, overlap=True, memory_pool=True),
            ),
        },
        log=lambda _: None,
    )
    assert llama2.parallel.weight.size == 2 and llama2.parallel.zero1.size == 4


def test_legacy_checkpoint_keys_become_load_ckpt_info():
    # InternEvo's internlm/initialize/legacy/launch.py reads these when load_ckpt_info is absent.
    only_model = config_from_dict({"ckpt": dict(load_model_only_folder="local:/m", load_given_ckpt=True)})
    assert only_model.ckpt.load_ckpt_info == LoadCkptInfo(path="local:/m", content=("model",))
    assert only_model.ckpt.auto_resume is False
    full = config_from_dict({"ckpt": dict(load_ckpt_folder="local:/c", load_optimizer=False)})
    assert full.ckpt.load_ckpt_info.content == ("model", "sampler")
    with pytest.raises(ConfigError, match="load_model_only_folder"):
        config_from_dict({"ckpt": dict(load_ckpt_folder="a", load_model_only_folder="b")})


def test_infinite_intervals_mean_never():
    cfg = config_from_dict({"ckpt": dict(checkpoint_every=float("inf"), oss_snapshot_freq=float("inf"))})
    assert cfg.ckpt.checkpoint_every is None and cfg.ckpt.oss_snapshot_freq is None


def test_config_is_immutable():
    cfg = config_from_dict({})
    with pytest.raises(AttributeError):
        cfg.data.micro_bsz = 3  # type: ignore[misc]
