# The CPU performance check of the train step (benchmarks/bench_train_step.py, `make bench`): a
# 4-layer InternLM, hidden 256, 4 heads, vocab 4096, seq 256, fp32, mock data. Setting (a) is this
# file: micro_bsz 4 x micro_num 1, one pack of four seq_len windows (pack_sample_into_one); setting
# (b) adds --set data.micro_bsz=1 --set data.micro_num=4 (gradient accumulation over 4 micro-batches).
JOB_NAME = "bench_cpu"
SEQ_LEN = 256
TOTAL_STEPS = 1000

data = dict(
    seq_len=SEQ_LEN,
    micro_num=1,
    micro_bsz=4,
    pack_sample_into_one=True,
    total_steps=TOTAL_STEPS,
    min_length=0,
    train_folder=None,
    valid_folder=None,
    valid_every=0,
    num_worker=0,
)
model_type = "INTERNLM"
model = dict(
    checkpoint=False,
    num_attention_heads=4,
    vocab_size=4096,
    hidden_size=256,
    num_layers=4,
    mlp_ratio=8 / 3,
    dtype="torch.float32",
    norm_type="rmsnorm",
    layer_norm_epsilon=1e-5,
    use_flash_attn=False,
    num_chunks=1,
)
parallel = dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1))
adam = dict(lr=2e-3, adam_beta1=0.9, adam_beta2=0.95, adam_beta2_c=0, adam_eps=1e-8, weight_decay=0.01)
lr_scheduler = dict(total_steps=TOTAL_STEPS, init_steps=0, warmup_ratio=0.05, eta_min=2e-4)
beta2_scheduler = dict(init_beta2=adam["adam_beta2"], c=adam["adam_beta2_c"])
hybrid_zero_optimizer = dict(clip_grad_norm=1.0)
loss = dict(label_smoothing=0)
ckpt = dict(enable_save_ckpt=False)
run_dir = "runs/bench_cpu"
