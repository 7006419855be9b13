# The demo: a tiny InternLM trained on CPU on real text (the Python standard library's source as
# "code", its docstrings as "en"), tokenized by a small sentencepiece model trained on the spot.
# `make demo` builds the data into .cache/demo first (tools/build_demo_data.py).
JOB_NAME = "demo_moe"
DEMO_DATA = ".cache/demo"
SEQ_LEN = 256
TOTAL_STEPS = 50

data = dict(
    seq_len=SEQ_LEN,
    micro_num=2,
    micro_bsz=2,
    valid_micro_num=2,
    valid_every=40,
    pack_sample_into_one=False,
    total_steps=TOTAL_STEPS,
    min_length=0,
    train_folder=f"{DEMO_DATA}/train",
    valid_folder=f"{DEMO_DATA}/valid",
    tokenizer_path=f"{DEMO_DATA}/tokenizer.model",
)
model_type = "MIXTRALMOE"
model = dict(
    checkpoint=False,
    num_attention_heads=4,
    vocab_size=2048,
    hidden_size=256,
    num_layers=4,
    mlp_ratio=8 / 3,
    dtype="torch.float32",
    norm_type="rmsnorm",
    layer_norm_epsilon=1e-5,
    use_flash_attn=False,
    num_chunks=1,
    qkv_bias=False,
    o_bias=False,
    num_kv_attention_heads=2,
    moe_type="GShard",
    num_experts=4,
    top_k=2,
)
parallel = dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1))
adam = dict(lr=2e-3, adam_beta1=0.9, adam_beta2=0.95, adam_beta2_c=0, adam_eps=1e-8, weight_decay=0.01)
lr_scheduler = dict(total_steps=TOTAL_STEPS, init_steps=0, warmup_ratio=0.05, eta_min=2e-4)
beta2_scheduler = dict(init_beta2=adam["adam_beta2"], c=adam["adam_beta2_c"])
hybrid_zero_optimizer = dict(clip_grad_norm=1.0)
loss = dict(label_smoothing=0, moe_loss_coeff=0.02)
# Asynchronous checkpoints every 60 steps into <run_dir>/checkpoints; `make demo` starts afresh each time.
ckpt = dict(enable_save_ckpt=False)
run_dir = "runs/demo_moe"
