# The 1.5B InternLM of the throughput benchmark (benchmarks/train_throughput.py, `make bench-gpu`):
# 22 layers, hidden 2048, 16 heads, SwiGLU 5632, vocab 103168, seq 4096, 8 x 4096 tokens per step,
# AdamW on fp32 master weights, bf16 compute. Mock data unless data.train_folder is set; the
# benchmark sets the step count, checkpoints and validation on the command line.
JOB_NAME = "bench_1p5b"
SEQ_LEN = 4096
TOTAL_STEPS = 60

data = dict(
    seq_len=SEQ_LEN,
    micro_num=1,
    micro_bsz=8,
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
    num_attention_heads=16,
    vocab_size=103168,
    hidden_size=2048,
    num_layers=22,
    mlp_ratio=2.75,  # 2048 * 2.75 = 5632, already a multiple of 256
    dtype="torch.bfloat16",
    norm_type="rmsnorm",
    layer_norm_epsilon=1e-5,
    use_flash_attn=True,
    num_chunks=1,
)
parallel = dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1))
adam = dict(lr=3e-4, adam_beta1=0.9, adam_beta2=0.95, adam_beta2_c=0, adam_eps=1e-8, weight_decay=0.01)
lr_scheduler = dict(total_steps=TOTAL_STEPS, init_steps=0, warmup_ratio=0.01, eta_min=3e-5)
beta2_scheduler = dict(init_beta2=adam["adam_beta2"], c=adam["adam_beta2_c"])
hybrid_zero_optimizer = dict(clip_grad_norm=1.0)
loss = dict(label_smoothing=0)
ckpt = dict(enable_save_ckpt=False, checkpoint_every=50)
run_dir = "runs/bench_1p5b"
