"""Typed sections of a training config, with InternEvo's defaults.

Field names are InternEvo's config keys, so a section's fields are exactly the keys its dict may
hold. Defaults follow InternEvo's ``args_sanity_check`` (internlm/initialize/launch.py), its
model builders and its demo configs; docs/config.md lists where each default comes from. Fields
typed ``X | None`` with a None default and a "derived" comment are filled from other values by
``resolve.py`` (e.g. ``data.packed_length``); after loading they hold the resolved value.

All sections are frozen: a Config is passed around explicitly and never mutated. Use
``dataclasses.replace`` or ``config_from_dict(..., overrides=...)`` for variants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from internevo_jax.names import CE_CHUNK_SIZE, MLP_MULTIPLE_OF, REMAT_FULL, RMSNORM, round_mlp_hidden_size

# dtype string -> (jnp dtype name, jax.default_matmul_precision value or None).
# "torch.tf32" computes in float32 with TF32 matmuls, as InternEvo's allow_tf32 switch does.
DTYPES: dict[str, tuple[str, str | None]] = {
    "torch.float16": ("float16", None),
    "torch.half": ("float16", None),
    "float16": ("float16", None),
    "fp16": ("float16", None),
    "torch.bfloat16": ("bfloat16", None),
    "bfloat16": ("bfloat16", None),
    "bf16": ("bfloat16", None),
    "torch.float32": ("float32", "highest"),
    "float32": ("float32", "highest"),
    "fp32": ("float32", "highest"),
    "torch.tf32": ("float32", "tensorfloat32"),
    "tf32": ("float32", "tensorfloat32"),
}
TENSOR_MODES = ("mtp", "msp", "fsp", "isp")
PIPELINE_MODES = ("1F1B", "ZBH1", "ZBV")
CKPT_CONTENT = ("model", "sampler", "optimizer", "scheduler", "all")
MIB = 1024 * 1024


@dataclass(frozen=True)
class DataConfig:
    seq_len: int = 2048
    micro_num: int = 1
    micro_bsz: int = 1
    packed_length: int | None = None  # derived: always seq_len * micro_bsz (InternEvo forces it)
    gradient_accumulation: int | None = None  # derived: micro_num
    batch_size: int | None = None  # derived: micro_num (InternEvo's alias)
    valid_micro_num: int | None = None  # derived: micro_num when absent
    valid_every: int = 0  # 0 disables evaluation
    pack_sample_into_one: bool = False
    total_steps: int = 50000
    skip_batches: str | None = ""
    rampup_batch_size: str | None = ""
    min_length: int = 0
    min_length_dict: dict[str, Any] | None = None
    train_folder: str | None = None  # None -> mock data
    valid_folder: str | None = None
    type: str = "tokenized"
    tokenizer_path: str | None = None
    subset_name: str | None = None
    fixed_random_dataset_seqlen: bool = True
    num_worker: int = 4
    seed: int | None = None  # derived: the top-level seed when absent
    use_packed_dataset: bool = True
    unit_schedule_size: int | None = None  # steers ZeRO++'s pipeline schedule only
    use_shm: bool = False
    shm_path: str | None = None
    empty_cache_and_diag_interval: int = 50
    diag_outlier_ratio: float = 1.1


@dataclass(frozen=True)
class ModelConfig:
    checkpoint: bool | float = False  # True/False or the fraction of leading layers to rematerialise
    num_chunks: int = 1
    num_attention_heads: int = 32
    num_kv_attention_heads: int | None = None  # derived: num_attention_heads when absent
    embed_split_hidden: bool = False
    vocab_size: int = 50304
    embed_grad_scale: float = 1.0
    parallel_output: bool = True
    hidden_size: int = 2048
    num_layers: int = 48
    mlp_ratio: float = 4.0
    multiple_of: int = MLP_MULTIPLE_OF
    apply_post_layer_norm: bool = False
    dtype: str = "torch.float16"
    norm_type: str = RMSNORM
    layer_norm_epsilon: float = 1e-5
    use_flash_attn: bool = True
    rope_base: float = 10000.0
    no_bias: bool = False
    # Per-projection attention biases (Qwen2: qkv_bias=True, o_bias=False); None: the model
    # family's default (docs/model.md), which for most families is `not no_bias`.
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    head_dim: int | None = None  # derived: hidden_size // num_attention_heads when absent
    add_unit_offset: bool = False  # RMSNorm scales by (1 + w) (Gemma)
    use_sliding_window: bool = False  # Qwen2: layers from max_window_layers on attend a window
    sliding_window: int | None = None
    max_window_layers: int = 0
    enable_qkv_fusion: bool | None = None  # None: the family's layout (INTERNLM2 fused, others not)
    qk_norm: bool | None = None  # RMSNorm of every q and k head (Qwen3); None: the family's default
    tie_word_embeddings: bool | None = None  # None: the family's default (GEMMA tied, others untied)
    qk_interleaved: bool | None = None  # derived: (not adapt_hf) when adapt_hf is given, else False
    adapt_hf: bool | None = None
    max_position_embeddings: int = 2048
    use_dynamic_ntk_rope: bool = False
    residual_in_fp32: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    is_reward: bool = False
    dropout_selective_checkpoint: bool = True
    use_scaled_init: bool = True
    use_swiglu: bool = True
    norm_head: bool = False
    deepnorm: bool = False
    init_type: str = "normal"
    embedding_init_std: float | None = None  # None: the model family's own init
    attn_wqkv_init_std: float | None = None
    attn_other_init_std: float | None = None
    ffn_uplayer_init_std: float | None = None
    ffn_other_init_std: float | None = None
    out_head_init_std: float | None = None
    mlp_layer_fusion: bool = False
    num_experts: int = 1
    top_k: int = 1
    num_shared_experts: int = 0
    moe_use_residual: bool = False
    moe_type: str = "GShard"
    moe_layer_kwargs: dict[str, Any] = field(default_factory=dict)
    # Extensions of this project (docs/config.md).
    attn_impl: str = "auto"  # auto | cudnn | pallas_gpu | splash | xla (docs/attention.md)
    # None: stacked exactly when the pipeline needs it (parallel.pipeline.size > 1), else unrolled
    scan_layers: bool | None = None
    remat_policy: str = REMAT_FULL

    @property
    def compute_dtype(self) -> Any:
        """The jnp dtype layers compute in (parameters stay float32)."""
        import jax.numpy as jnp  # deferred: reading a config should not need jax started

        return getattr(jnp, DTYPES[self.dtype][0])

    @property
    def matmul_precision(self) -> str | None:
        """A ``jax.default_matmul_precision`` value, or None to keep JAX's default."""
        return DTYPES[self.dtype][1]

    @property
    def mlp_hidden_size(self) -> int:
        """int(hidden_size * mlp_ratio) rounded up to a multiple of ``multiple_of`` (4096*8/3 -> 11008)."""
        return round_mlp_hidden_size(self.hidden_size, self.mlp_ratio, self.multiple_of)

    @property
    def checkpoint_layers(self) -> int:
        """How many leading layers are rematerialised: True -> all, False -> 0, f -> int(layers * f)."""
        if self.checkpoint is True:
            return self.num_layers
        if self.checkpoint is False:
            return 0
        return int(self.num_layers * self.checkpoint)


@dataclass(frozen=True)
class ZeroConfig:
    size: int = -1  # <= 0: the whole data-parallel group; 1: no sharding; else a divisor of dp
    fsdp: bool = False


@dataclass(frozen=True)
class TensorConfig:
    size: int = 1
    mode: str = "mtp"
    enable_vit: bool = False


@dataclass(frozen=True)
class PipelineConfig:
    size: int = 1
    interleaved_overlap: bool = False
    mode: str = "1F1B"  # "ZBH1" / "ZBV" (zero-bubble schedules) are refused
    use_zeropp: bool = False  # True is refused: ZeRO++ is not implemented
    zero_bubble: bool = False  # True is refused: zero-bubble schedules are not implemented
    decouple_grad: bool = False  # a ZeRO++ option


@dataclass(frozen=True)
class WeightConfig:
    size: int = 1
    overlap: bool = False
    memory_pool: bool = False
    launch_allgather_before: str = "wo"  # InternEvo's prefetch hooks; XLA schedules gathers itself
    forward_overlap_per: str = "layer"


@dataclass(frozen=True)
class ExpertConfig:
    # -1 (or less): the data-parallel size; either way at most model.num_experts (InternEvo's rule)
    size: int = -1
    no_tp: bool = False  # True: expert weights are not split over tensor parallelism


@dataclass(frozen=True)
class ExpertWeightConfig:
    size: int = 1  # > 1: expert weights sharded FSDP-style over the "fsdp" axis (docs/moe.md)
    overlap: bool = False
    memory_pool: bool = False
    launch_allgather_before: str = "wo"
    forward_overlap_per: str = "layer"


@dataclass(frozen=True)
class ParallelConfig:
    zero1: ZeroConfig = field(default_factory=ZeroConfig)
    tensor: TensorConfig = field(default_factory=TensorConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    weight: WeightConfig = field(default_factory=WeightConfig)
    sequence_parallel: bool = False  # derived: tensor.mode in (msp, fsp, isp)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    expert_weight: ExpertWeightConfig = field(default_factory=ExpertWeightConfig)
    expert_zero1: dict[str, Any] = field(default_factory=dict)
    sequence_2D: dict[str, Any] = field(default_factory=dict)
    gqa: bool = False


@dataclass(frozen=True)
class LoadCkptInfo:
    path: str | None = ""  # None: load nothing (InternEvo's 8B_internlm3.py ships path=None)
    content: tuple[str, ...] = ("model",)
    ckpt_type: str = "internevo"  # "internlm" is read as "internevo"


@dataclass(frozen=True)
class CkptConfig:
    enable_save_ckpt: bool = True
    save_ckpt_folder: str | None = None  # derived: "local:<run_dir>/checkpoints" when saving is on
    load_ckpt_folder: str | None = None
    load_ckpt_info: LoadCkptInfo | None = None  # derived from the legacy keys when absent
    auto_resume: bool | None = None  # derived: True, or (not load_given_ckpt) for legacy configs
    checkpoint_every: int | None = 100  # None (or inf in a file): never on a step count
    async_upload: bool = False
    async_upload_tmp_folder: str | None = "/dev/shm/internlm_tmp_ckpt/"
    oss_snapshot_freq: int | None = None  # None (or inf): no snapshots
    stop_file_path: str | None = None
    snapshot_ckpt_folder: str | None = None
    universal_ckpt: dict[str, Any] = field(default_factory=dict)
    load_model_only_folder: str | None = None  # legacy
    load_given_ckpt: bool | None = None  # legacy
    load_optimizer: bool = True  # legacy
    keep_last_n: int | None = None  # extension: keep only the newest N checkpoints
    # True: a Hugging Face copy <save_ckpt_folder>/<step>_hf of every regular checkpoint (checkpoint/hf_copy.py)
    enable_internevo2hf_ckpt: bool = False
    # Extensions: the deadlines of S3 requests, saves and the processes' agreements (docs/checkpoint.md)
    s3_connect_timeout_s: float = 3.0  # connecting to the S3 endpoint, each request
    s3_read_timeout_s: float = 30.0  # the answer to one S3 transfer request
    s3_probe_timeout_s: float = 10.0  # the start-up check of the bucket and each listing request
    s3_attempts: int = 3  # tries of each S3 operation of a save or a download
    upload_timeout_s: float = 3600.0  # a save's whole S3 upload; past it the checkpoint is not saved
    save_timeout_s: float = 7200.0  # a save's background work: writing, upload, marker, HF copy, pruning
    agreement_timeout_s: float = 3600.0  # waiting for the other processes at a meeting point


@dataclass(frozen=True)
class Fp16ScalerConfig:
    initial_scale: float = 2.0**16
    min_scale: float | None = 1.0
    growth_interval: int = 1000


@dataclass(frozen=True)
class GradScalerConfig:
    fp16: Fp16ScalerConfig = field(default_factory=Fp16ScalerConfig)
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    max_scale: float | None = 2.0**24
    hysteresis: int = 2


@dataclass(frozen=True)
class HybridZeroOptimizerConfig:
    overlap_sync_grad: bool = False
    overlap_sync_param: bool = False
    reduce_bucket_size: int = 512 * MIB
    clip_grad_norm: float = 0.0  # 0 disables clipping
    zero_overlap_communication: bool | None = None
    use_split_tensor_optim: bool = False
    all_gather_size: int = 512 * MIB


@dataclass(frozen=True)
class LossConfig:
    label_smoothing: float = 0.0
    moe_loss_coeff: float = 1.0
    op_type: str | None = None
    ce_chunk_size: int = CE_CHUNK_SIZE  # extension: tokens per row per chunk of the fused loss; 0 = off


@dataclass(frozen=True)
class AdamConfig:
    lr: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_beta2_c: float = 0.0
    adam_eps: float = 1e-8
    weight_decay: float = 0.01
    exclude_norm_and_bias_from_decay: bool = False  # extension; InternEvo decays everything


@dataclass(frozen=True)
class LrSchedulerConfig:
    total_steps: int | None = None  # derived: data.total_steps when absent
    init_steps: int = 0
    warmup_ratio: float = 0.01
    eta_min: float = 1e-5
    last_epoch: int = -1


@dataclass(frozen=True)
class Beta2SchedulerConfig:
    init_beta2: float | None = None  # derived: adam.adam_beta2
    c: float | None = None  # derived: adam.adam_beta2_c
    cur_iter: int = -1


@dataclass(frozen=True)
class AlertConfig:
    """Alerts, heartbeat and hang watchdog (docs/alerts.md). As in InternEvo, enable_feishu_alert
    switches on the Feishu webhook, the light-monitor heartbeat and the alert file."""

    enable_feishu_alert: bool = False
    feishu_alert_address: str | None = None  # a Feishu bot webhook URL
    light_monitor_address: str | None = None  # heartbeat endpoint: an http(s) URL or host:port
    alert_file_path: str | None = None  # one JSON line appended per alert
    # Extensions of this project.
    webhook_address: str | None = None  # any http(s) endpoint; gets each alert as JSON, on its own
    hang_timeout_s: float = 600.0  # no step for this long -> stacks logged + "hang" alert; 0: off
    heartbeat_interval_s: float = 60.0  # at most one heartbeat per this many seconds; 0: every step
    request_timeout_s: float = 5.0  # per HTTP request; also the longest wait for unsent alerts at the end
    retries: int = 2  # extra attempts of a failed alert delivery, with doubling waits from 0.5 s
    loss_spike_ratio: float | None = 1.5  # loss > ratio * previous step's loss -> alert; None: off


@dataclass(frozen=True)
class TensorboardConfig:
    queue_max_length: int = 1  # steps whose scalars are held before they are written to disk


@dataclass(frozen=True)
class ProfilerConfig:
    """The step window `--profiling` traces (extension; InternEvo's profiler schedule skips 5 steps)."""

    skip_steps: int = 5  # steps run before the trace starts (compilation and warm-up)
    active_steps: int = 3  # steps traced
    memory_profile: bool = True  # also save a device-memory profile (pprof) after the window


@dataclass(frozen=True)
class MonitorConfig:
    alert: AlertConfig = field(default_factory=AlertConfig)
    tensorboard: TensorboardConfig = field(default_factory=TensorboardConfig)
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)  # extension
    progress_bar: bool | None = None  # extension; None: shown when stdout is a terminal


@dataclass(frozen=True)
class GenerationConfig:
    """InternEvo's `generation` dict (read by its generate.py), with its defaults: the defaults of
    `python -m internevo_jax.generate` (docs/generation.md says which keys have an effect)."""

    ckpt_folder: str | None = None  # None: the newest checkpoint under ckpt.save_ckpt_folder
    output_folder: str | None = None  # InternEvo's dataset mode: no effect here
    data_folder: str | None = None  # InternEvo's dataset mode: no effect here
    batch_size: int | None = None  # prompts per batch; None: data.valid_micro_num * data.micro_bsz
    eos_id: tuple[int, ...] = (2,)  # an id or a list of ids; any of them ends a row
    additional_eos_token_list: tuple[int, ...] | None = None  # more ids that end a row
    bos_id: int = 1  # put before a text prompt; also fills a row once it has ended (InternEvo's pad)
    max_length: int = 100  # prompt + new tokens
    do_sample: bool = True
    temperature: float = 1.0
    num_beams: int = 1  # 1 only: beam search is not implemented
    top_k: int = 50  # 0: off
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0


# Top-level dict sections: config-file name -> dataclass.
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "ckpt": CkptConfig,
    "grad_scaler": GradScalerConfig,
    "hybrid_zero_optimizer": HybridZeroOptimizerConfig,
    "loss": LossConfig,
    "adam": AdamConfig,
    "lr_scheduler": LrSchedulerConfig,
    "beta2_scheduler": Beta2SchedulerConfig,
    "monitor": MonitorConfig,
    "generation": GenerationConfig,
}
# Sections that are None in a Config whose file does not have them.
OPTIONAL_SECTIONS = ("generation",)
# Top-level scalar keys with a meaning here: name -> (type, default).
SCALARS: dict[str, tuple[Any, Any]] = {
    "model_type": (str, "INTERNLM"),
    "use_fp32_norm": (bool, False),
    "cudnn_deterministic": (bool, False),
    "cudnn_benchmark": (bool, False),
    "seed": (int, 1024),
    "run_dir": (str | None, None),
    "xla_flags": (str | None, None),
    "enable_tb": (bool, True),
    "tensorboard_folder": (str | None, None),
    "resume_tb_folder": (str | None, None),
}
# Top-level InternEvo keys accepted and kept in Config.extra; none of them changes training here
# (validate refuses the values that ask for a feature this project lacks).
EXTRA_KEYS = (
    "alert_address",
    "batch_count",
    "selective_checkpoint",
    "selective_checkpoint_offload",
    "fsdp_wrap_cls",  # only meaningful with InternEvo's `hf` model wrapper, which is refused
    "int8_training",  # True is refused (validate.py)
    "int8_mode",
    "grad_profiling",
    "metric_dtype",
    "use_apex_adam",
    "tensorboard",
)
DEFAULT_JOB_NAME = "AnonymousJob"


@dataclass(frozen=True)
class Config:
    """A resolved, validated training config. Build one with load_config or config_from_dict."""

    job_name: str = DEFAULT_JOB_NAME
    model_type: str = "INTERNLM"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    grad_scaler: GradScalerConfig = field(default_factory=GradScalerConfig)
    hybrid_zero_optimizer: HybridZeroOptimizerConfig = field(default_factory=HybridZeroOptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)
    lr_scheduler: LrSchedulerConfig = field(default_factory=LrSchedulerConfig)
    beta2_scheduler: Beta2SchedulerConfig = field(default_factory=Beta2SchedulerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    generation: GenerationConfig | None = None  # None: the config has no `generation` dict
    use_fp32_norm: bool = False
    cudnn_deterministic: bool = False
    cudnn_benchmark: bool = False
    seed: int = 1024
    run_dir: str | None = None  # derived: "runs/<job_name>" when absent
    xla_flags: str | None = None  # extension: XLA flags added when a run starts (docs/performance.md)
    enable_tb: bool = True
    tensorboard_folder: str | None = None
    resume_tb_folder: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    source_path: str | None = None
    no_effect_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-serialisable data (derived model sizes included)."""
        out = _plain(self)
        out["model"].update(
            compute_dtype=DTYPES[self.model.dtype][0],
            matmul_precision=self.model.matmul_precision,
            mlp_hidden_size=self.model.mlp_hidden_size,
            checkpoint_layers=self.model.checkpoint_layers,
        )
        return out


def _plain(value: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists; anything not JSON-able -> its repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # json.dumps writes inf/nan as non-standard tokens; strings keep the file valid JSON.
        return value if value == value and abs(value) != float("inf") else repr(value)
    return repr(value)
