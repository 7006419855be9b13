# LLaMA2-70B fine-tuning, after InternEvo's configs/70B_sft_llama2.py (model_type "LLAMA", InternEvo's
# alias of LLAMA2): the same keys and values, so that file runs here unchanged. Its layout asks for
# 32 devices (tensor 4 x pipeline 8).
cudnn_deterministic = False
cudnn_benchmark = False

JOB_NAME = "70B_llama"
model_type = "LLAMA"
DO_ALERT = False

SEQ_LEN = 8192
HIDDEN_SIZE = 8192
NUM_ATTENTION_HEAD = 64
NUM_KV_ATTENTION_HEAD = 8
MLP_RATIO = 3.5
NUM_LAYER = 80
VOCAB_SIZE = 32000

LEARNING_RATE = 2e-5
MIN_LR = 6e-6
OPTIMIZER_WARMUP_STEP = 0

# The released weights to start from; the next line turns loading off again, as InternEvo's file does.
LOAD_CKPT_INFO = dict(
    path="local:/mnt/petrelfs/share_data/llm_llama/llama2_raw/llama-2-70b/",
    content=("model",),
    ckpt_type="LLAMA",
)
LOAD_CKPT_INFO = None

SAVE_CKPT_FOLDER = None

TRAIN_FOLDER = "dolly_tokenizer_llama/train"  # None trains on mock data
VALID_FOLDER = "dolly_tokenizer_llama/valid"

CHECKPOINT_EVERY = 5000000

ckpt = dict(
    enable_save_ckpt=False,
    save_ckpt_folder=SAVE_CKPT_FOLDER,
    load_ckpt_info=LOAD_CKPT_INFO,
    auto_resume=False,
    checkpoint_every=CHECKPOINT_EVERY,
    async_upload=True,
    async_upload_tmp_folder="/dev/shm/internlm_tmp_ckpt/",
    oss_snapshot_freq=int(CHECKPOINT_EVERY / 2),
)

data = dict(
    seq_len=SEQ_LEN,
    micro_num=8,
    micro_bsz=1,
    valid_micro_num=8,
    valid_every=50,
    pack_sample_into_one=False,
    total_steps=50000,
    skip_batches="",
    rampup_batch_size="",
    min_length=50,
    train_folder=TRAIN_FOLDER,
    valid_folder=VALID_FOLDER,
    empty_cache_and_diag_interval=10,
    diag_outlier_ratio=1.1,
)

grad_scaler = dict(
    fp16=dict(initial_scale=2**14, min_scale=1, growth_interval=1000),
    growth_factor=2,
    backoff_factor=0.5,
    max_scale=2**24,
    hysteresis=2,
)

hybrid_zero_optimizer = dict(
    overlap_sync_grad=True,
    overlap_sync_param=False,
    reduce_bucket_size=512 * 1024 * 1024,
    clip_grad_norm=1.0,
)

loss = dict(label_smoothing=0)

adam = dict(lr=LEARNING_RATE, adam_beta1=0.9, adam_beta2=0.95, adam_beta2_c=0, adam_eps=1e-8, weight_decay=0.01)

lr_scheduler = dict(
    total_steps=data["total_steps"],
    init_steps=OPTIMIZER_WARMUP_STEP,
    warmup_ratio=0.01,
    eta_min=MIN_LR,
    last_epoch=-1,
)

beta2_scheduler = dict(init_beta2=adam["adam_beta2"], c=adam["adam_beta2_c"], cur_iter=-1)

model = dict(
    checkpoint=True,  # True, False, or the fraction of layers to rematerialise
    num_chunks=1,
    num_attention_heads=NUM_ATTENTION_HEAD,
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
    num_kv_attention_heads=NUM_KV_ATTENTION_HEAD,
)

# The old form of the parallel dict: tensor as a plain size, sequence_parallel beside it.
parallel = dict(
    zero1=dict(size=-1, fsdp=False),
    tensor=4,
    pipeline=dict(size=8, interleaved_overlap=True),
    sequence_parallel=False,
)

monitor = dict(
    alert=dict(
        enable_feishu_alert=DO_ALERT,
        feishu_alert_address=None,
        light_monitor_address=None,
    ),
)
