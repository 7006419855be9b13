# InternLM3-8B, after InternEvo's configs/8B_internlm3.py: the same keys and values, so that file runs
# here unchanged. Set MODEL_ONLY_FOLDER to a Hugging Face InternLM3 folder to fine-tune the released model.
JOB_NAME = "8b_internlm3_train"
model_type = "INTERNLM3"
DO_ALERT = False

VOCAB_SIZE = 128512
SEQ_LEN = 4096
HIDDEN_SIZE = 4096
NUM_ATTENTION_HEAD = 32
NUM_KV_ATTENTION_HEAD = 2
MLP_RATIO = 2.5
NUM_LAYER = 48

MODEL_ONLY_FOLDER = None  # "local:llm_ckpts/xxxx"
SAVE_CKPT_FOLDER = None  # "local:llm_ckpts"
CHECKPOINT_EVERY = 50
ckpt = dict(
    enable_save_ckpt=False,
    save_ckpt_folder=SAVE_CKPT_FOLDER,
    # With path None nothing is loaded; a Hugging Face folder there is read as ckpt_type="hf".
    load_ckpt_info=dict(path=MODEL_ONLY_FOLDER, content=("model",), ckpt_type="hf"),
    auto_resume=False,
    checkpoint_every=CHECKPOINT_EVERY,
    async_upload=True,
    async_upload_tmp_folder="/dev/shm/internlm_tmp_ckpt/",
    oss_snapshot_freq=int(CHECKPOINT_EVERY / 2),
    enable_internevo2hf_ckpt=False,
)

TRAIN_FOLDER = None
VALID_FOLDER = None
data = dict(
    seq_len=SEQ_LEN,
    micro_num=1,
    micro_bsz=2,
    valid_micro_num=4,
    valid_every=0,
    pack_sample_into_one=False,
    total_steps=20000,
    skip_batches="",
    rampup_batch_size="",
    min_length=50,
    train_folder=TRAIN_FOLDER,
    valid_folder=VALID_FOLDER,
    empty_cache_and_diag_interval=200,
    diag_outlier_ratio=1.1,
)

grad_scaler = dict(
    fp16=dict(initial_scale=2**16, min_scale=1, growth_interval=1000),
    growth_factor=2,
    backoff_factor=0.5,
    max_scale=2**24,
    hysteresis=2,
)

hybrid_zero_optimizer = dict(
    overlap_sync_grad=True,
    overlap_sync_param=True,
    reduce_bucket_size=512 * 1024 * 1024,
    clip_grad_norm=1.0,
)

# op_type picks one of InternEvo's CUDA cross-entropy kernels; the loss here is one JAX function.
loss = dict(label_smoothing=0, op_type="py_vocab_parallel")

adam = dict(lr=1e-4, adam_beta1=0.9, adam_beta2=0.95, adam_beta2_c=0, adam_eps=1e-8, weight_decay=0.01)

lr_scheduler = dict(total_steps=data["total_steps"], init_steps=0, warmup_ratio=0.01, eta_min=1e-5, last_epoch=-1)

beta2_scheduler = dict(init_beta2=adam["adam_beta2"], c=adam["adam_beta2_c"], cur_iter=-1)

use_fp32_norm = False
model = dict(
    checkpoint=False,
    num_chunks=1,
    num_attention_heads=NUM_ATTENTION_HEAD,
    num_kv_attention_heads=NUM_KV_ATTENTION_HEAD,
    embed_split_hidden=True,
    vocab_size=VOCAB_SIZE,
    embed_grad_scale=1,
    parallel_output=True,
    hidden_size=HIDDEN_SIZE,
    num_layers=NUM_LAYER,
    no_bias=True,
    mlp_ratio=MLP_RATIO,
    apply_post_layer_norm=False,
    dtype="torch.bfloat16",
    norm_type="rmsnorm",
    layer_norm_epsilon=1e-5,
    use_flash_attn=True,
    # False: q/k columns in HF's rotate-half order (what HF checkpoints hold); docs/model.md.
    qk_interleaved=False,
    rope_base=50000000,
    enable_qkv_fusion=False,  # separate wq/wk/wv, as HF's InternLM3 stores them
)

# Weight parallelism (isp) over 16 devices; the all-gather prefetch knobs steer InternEvo's
# PyTorch hooks (XLA schedules the gathers itself). sequence_2D is off.
parallel = dict(
    zero1=dict(size=1),
    tensor=dict(size=1, mode="isp"),
    pipeline=dict(size=1, interleaved_overlap=True),
    weight=dict(size=16, overlap=True, launch_allgather_before="wo", forward_overlap_per="module"),
    sequence_2D=dict(
        enable=False,
        head_size=2,
        context_size=4,
        window_size=1,
        device_placement_strategy=dict(head_first=True, interleaved=False),
    ),
)

cudnn_deterministic = False
cudnn_benchmark = False

monitor = dict(
    alert=dict(
        enable_feishu_alert=DO_ALERT,
        feishu_alert_address=None,
        light_monitor_address=None,
        alert_file_path=f"llm_alter/{JOB_NAME}_alert.log",
    ),
    tensorboard=dict(queue_max_length=10),
)

generation = dict(
    ckpt_folder="/path/to/saved/ckpt",
    output_folder="/path/to/save/generation",
    batch_size=1,
    eos_id=[2, 0],
    bos_id=1,
    max_length=100,
    do_sample=True,
    temperature=1.0,
    top_k=50,
    top_p=1.0,
    repetition_penalty=1,
    length_penalty=1.0,
)
