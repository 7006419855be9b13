"""What every config key means: the texts of docs/config_reference.md.

``KEY_DOCS`` maps each dotted key the loader accepts (section names, nested groups such as
``parallel.zero1``, their keys, the top-level keys, ``EXTRA_KEYS`` and every key of
``NO_EFFECT_KEYS``) to one or two sentences. Types and defaults are not written here: the
generator reads them from ``schema.py``.

A key listed in ``compat.NO_EFFECT_KEYS`` says what it does in InternEvo, then ``No effect here:``
and why nothing needs to happen in JAX; no other entry uses that phrase.
tests/config/test_config_reference.py checks both rules and that every schema key has an entry.
After editing, regenerate the reference with ``python tools/config_reference.py``.
"""

from __future__ import annotations

NO_EFFECT_MARK = "No effect here:"

# Keys InternEvo does not have (marked "extension" in the reference).
EXTENSION_KEYS = frozenset(
    {
        "seed",
        "run_dir",
        "xla_flags",
        "model.attn_impl",
        "model.scan_layers",
        "model.remat_policy",
        "model.tie_word_embeddings",
        "loss.ce_chunk_size",
        "adam.exclude_norm_and_bias_from_decay",
        "ckpt.keep_last_n",
        "ckpt.s3_connect_timeout_s",
        "ckpt.s3_read_timeout_s",
        "ckpt.s3_probe_timeout_s",
        "ckpt.s3_attempts",
        "ckpt.upload_timeout_s",
        "ckpt.save_timeout_s",
        "ckpt.agreement_timeout_s",
        "monitor.profiler",
        "monitor.profiler.skip_steps",
        "monitor.profiler.active_steps",
        "monitor.profiler.memory_profile",
        "monitor.progress_bar",
        "monitor.alert.webhook_address",
        "monitor.alert.hang_timeout_s",
        "monitor.alert.heartbeat_interval_s",
        "monitor.alert.request_timeout_s",
        "monitor.alert.retries",
        "monitor.alert.loss_spike_ratio",
    }
)

KEY_DOCS: dict[str, str] = {
    # ---- top level ---------------------------------------------------------------------------
    "JOB_NAME": (
        "The run's name (an UPPER_CASE variable of the file, not a dict); the default run_dir is "
        "`runs/<JOB_NAME>`. `--set JOB_NAME=...` overrides it."
    ),
    "model_type": (
        "The model family: INTERNLM, INTERNLM2 (INTERNLM2_PUBLIC), INTERNLM3, LLAMA2 (LLAMA), QWEN2, "
        "QWEN3, GEMMA, BAICHUAN2, or the mixture-of-experts types INTERNLM_MoE, MIXTRALMOE, QWEN2MOE, "
        "QWEN3MOE (docs/model.md, docs/moe.md). `<FAMILY>_FROM_HF` is that family with "
        "`model.adapt_hf=True`; the model registry refuses unknown names."
    ),
    "use_fp32_norm": (
        "True: the norms multiply by their weight in fp32 as well; False: the normalised value is cast "
        "to the compute dtype first. The statistics are fp32 either way."
    ),
    "cudnn_deterministic": (
        "Asks PyTorch for deterministic cuDNN kernels. No effect here: JAX has no cuDNN switch of that "
        "kind; a step compiled by XLA gives the same results on the same hardware."
    ),
    "cudnn_benchmark": (
        "Lets PyTorch time cuDNN algorithms and keep the fastest. No effect here: XLA picks and tunes "
        "its kernels when the step compiles."
    ),
    "seed": (
        "Global seed of the run: parameter initialisation, and the data sampler's shuffle unless "
        "`data.seed` is given (InternEvo takes it from `--seed`; `--seed` works here too)."
    ),
    "run_dir": (
        "Folder of the run's outputs: the resolved `config.json`, `metrics.jsonl`, `run_summary.json`, "
        "profiles and, by default, the checkpoints."
    ),
    "xla_flags": (
        "XLA flags (space-separated, as in the XLA_FLAGS variable) added when a run starts, before jax "
        "starts its backends; they win over the environment's (docs/performance.md)."
    ),
    "enable_tb": "InternEvo's switch for writing the metrics as TensorBoard event files (docs/monitoring.md).",
    "tensorboard_folder": "Where TensorBoard event files go (InternEvo's key; docs/monitoring.md).",
    "resume_tb_folder": (
        "TensorBoard folder of an earlier run to continue writing into (InternEvo's key; docs/monitoring.md)."
    ),
    # ---- top-level keys kept in cfg.extra ------------------------------------------------------
    "alert_address": (
        "The older form of `monitor.alert.feishu_alert_address` (a Feishu webhook). No effect here: "
        "it is kept in cfg.extra and not read."
    ),
    "batch_count": (
        "A batch counter InternEvo writes into its config while it runs. No effect here: the step "
        "counter lives in the train state and the checkpoint."
    ),
    "selective_checkpoint": (
        "Keeps the attention outputs of rematerialised layers so their recomputation skips attention "
        "(faster, same results). No effect here: the layers named by `model.checkpoint` are recomputed "
        'as `model.remat_policy` says (`"save_matmuls"` keeps the projections\' outputs instead).'
    ),
    "selective_checkpoint_offload": (
        "Moves the activations `selective_checkpoint` keeps to host memory. No effect here: nothing "
        "is kept that way, so nothing is offloaded."
    ),
    "fsdp_wrap_cls": (
        "The module classes PyTorch FSDP wraps in InternEvo's `hf` model wrapper. No effect here: "
        "that wrapper is refused, and sharding follows `parallel`."
    ),
    "int8_training": (
        "InternEvo's int8 training (quantised matmuls). No effect here: only False is accepted; "
        "True is refused (see Refused values)."
    ),
    "int8_mode": (
        "How `int8_training` quantises. No effect here: int8 training is not implemented, so there "
        "is nothing to configure."
    ),
    "grad_profiling": (
        "InternEvo's per-layer gradient-norm and zero-gradient statistics for debugging. No effect "
        "here: those statistics are not computed; the metrics line has the global grad_norm."
    ),
    "metric_dtype": (
        'With "fp32", InternEvo computes its accuracy / perplexity metrics in fp32. No effect here: '
        "the loss and the metrics are always computed from fp32 logits."
    ),
    "use_apex_adam": (
        "Uses NVIDIA Apex's fused Adam kernel instead of PyTorch's. No effect here: the AdamW update "
        "is compiled by XLA into the step."
    ),
    "tensorboard": (
        "A top-level `tensorboard` dict some InternEvo configs carry. No effect here: "
        "`monitor.tensorboard` is the one that is read."
    ),
    # ---- data --------------------------------------------------------------------------------
    "data": "Batch shape, data source, packing and sampling (docs/data.md).",
    "data.seq_len": "Tokens per sequence: the attention window of a packed segment and the length of a row's pieces.",
    "data.micro_num": "Micro-batches per optimizer step (gradient accumulation, or the pipeline's micro-batches).",
    "data.micro_bsz": (
        "Sequences per micro-batch: a micro-batch is one packed row of `seq_len * micro_bsz` tokens per "
        "data-parallel rank."
    ),
    "data.packed_length": (
        "Tokens in one packed row. No effect here: it is always `seq_len * micro_bsz`, as in InternEvo; "
        "a value in the file is replaced."
    ),
    "data.gradient_accumulation": (
        "InternEvo's name for the number of accumulated micro-batches; without pipeline parallelism it "
        "must equal `micro_num` (another value is refused)."
    ),
    "data.batch_size": (
        "InternEvo's alias of `micro_num`. No effect here: it is always set to `micro_num`; a value in "
        "the file is replaced."
    ),
    "data.valid_micro_num": "Micro-batches per validation step (per data-parallel rank).",
    "data.valid_every": "Run validation every N steps; 0 disables it.",
    "data.pack_sample_into_one": (
        "False: a pack's segments follow the samples and attention never crosses one. True: segments "
        "are fixed `seq_len` windows and attention crosses samples inside a window."
    ),
    "data.total_steps": "Optimizer steps of the run (also `lr_scheduler.total_steps` when that is absent).",
    "data.skip_batches": 'Steps whose batch is loaded but not trained on: inclusive ranges like "100-200,350".',
    "data.rampup_batch_size": (
        'Batch-size ramp "start increment every": micro_num = min(start + (step // every) * increment, '
        'micro_num); "" or None disables it.'
    ),
    "data.min_length": "Training samples shorter than this many tokens are dropped (read from the .bin.meta).",
    "data.min_length_dict": (
        "Per-file minimum sample lengths: `{substring of a .bin path: min_length}`; a path matched by "
        "two keys is an error."
    ),
    "data.train_folder": (
        "Folder of `<type>/*.bin` + `.bin.meta` files (or, for streaming data, of raw text); None trains "
        "on seeded mock data."
    ),
    "data.valid_folder": (
        "Folder with one subfolder of `.bin` files per validation set; None validates on mock data."
    ),
    "data.type": (
        '"tokenized" (bin/meta files), "streaming" (raw text tokenized on the fly), or "hf" '
        '(read as "streaming").'
    ),
    "data.tokenizer_path": (
        "Sentencepiece model (or a folder holding tokenizer.model) for streaming data and for the "
        "Hugging Face copies of `ckpt.enable_internevo2hf_ckpt`."
    ),
    "data.subset_name": "Streaming data: the subfolder of `train_folder` to read.",
    "data.fixed_random_dataset_seqlen": (
        "Mock data: repeat each sample's pattern until it fills `seq_len` (InternEvo's RandomDataset)."
    ),
    "data.num_worker": (
        "Worker processes that build training batches (threads for streaming data); 0 builds them "
        "in the training process."
    ),
    "data.seed": "Seed of the sampler's global shuffle.",
    "data.use_packed_dataset": (
        "False: one sample per `seq_len` row, padded (InternEvo's unpacked batches); refused for "
        "streaming data."
    ),
    "data.unit_schedule_size": (
        "Steers the pipeline schedule of InternEvo's ZeRO++. No effect here: ZeRO++ is not "
        "implemented (`parallel.pipeline.use_zeropp=True` is refused)."
    ),
    "data.use_shm": (
        "Copies the .bin.meta index into shared memory so a node's processes share one copy. No effect "
        "here: the index is memory-mapped, so the page cache already shares it."
    ),
    "data.shm_path": "Where `use_shm` puts its copy. No effect here: see `data.use_shm`.",
    "data.empty_cache_and_diag_interval": (
        "Every N steps InternEvo empties PyTorch's CUDA cache and compares step times across ranks. "
        "No effect here: XLA has no caching allocator to empty, and no per-rank diagnosis runs."
    ),
    "data.diag_outlier_ratio": (
        "How much slower than the others a rank must be for InternEvo's diagnosis to report it. "
        "No effect here: see `data.empty_cache_and_diag_interval`."
    ),
    # ---- model -------------------------------------------------------------------------------
    "model": "The model's sizes, numerics and options; `model_type` picks the family (docs/model.md).",
    "model.checkpoint": (
        "Activation checkpointing: True (every layer), False (none), or the fraction of leading layers "
        "to rematerialise in the backward pass."
    ),
    "model.num_chunks": "Model chunks per pipeline stage; more than 1 gives the interleaved (circular) schedule.",
    "model.num_attention_heads": "Query heads per attention layer.",
    "model.num_kv_attention_heads": "Key/value heads (grouped-query attention); must divide the query heads.",
    "model.embed_split_hidden": (
        "Splits InternEvo's embedding table over tensor ranks along the hidden dimension instead of the "
        "vocabulary. No effect here: the rules table places the embedding (docs/parallel.md)."
    ),
    "model.vocab_size": "Vocabulary size: rows of the embedding table and columns of the head.",
    "model.embed_grad_scale": (
        "Scales the gradient of the embedding (and of the head's weight) by this factor; the forward "
        "value is unchanged."
    ),
    "model.parallel_output": (
        "Whether InternEvo gathers the head's tensor-parallel output before the loss. No effect here: "
        "XLA's partitioner places the logits and the loss."
    ),
    "model.hidden_size": "Width of the residual stream.",
    "model.num_layers": "Number of decoder layers.",
    "model.mlp_ratio": "MLP width over hidden_size, before rounding up to a multiple of `multiple_of`.",
    "model.multiple_of": "The MLP width, int(hidden_size * mlp_ratio), is rounded up to a multiple of this.",
    "model.apply_post_layer_norm": (
        "Post-norm blocks (and no final norm) for the families that honour it (INTERNLM2, LLAMA2, "
        "QWEN2, ...); InternEvo's INTERNLM ignores it, and so does ours."
    ),
    "model.dtype": (
        'Compute dtype: "torch.float16"/"torch.half", "torch.bfloat16", "torch.float32", "torch.tf32" '
        "(or fp16, bf16, fp32, tf32); parameters stay fp32 master weights."
    ),
    "model.norm_type": '"rmsnorm" or "layernorm".',
    "model.layer_norm_epsilon": "Epsilon of the norms.",
    "model.use_flash_attn": (
        'True: a fused attention kernel where one runs (`model.attn_impl`); False makes "auto" use the '
        "plain reference attention."
    ),
    "model.rope_base": "Base of the rotary position embedding (10000 for InternLM1, 1e6 for InternLM2-7B).",
    "model.no_bias": (
        "True: no biases on the attention projections, unless `qkv_bias` / `o_bias` say otherwise "
        "(QWEN2 ignores it, as InternEvo's does)."
    ),
    "model.qkv_bias": "Biases on the q/k/v projections; None: the family's default, else `not no_bias`.",
    "model.o_bias": "Bias on the attention output projection; None: the family's default, else `not no_bias`.",
    "model.head_dim": "Lanes per attention head, when not hidden_size / num_attention_heads (Gemma, Qwen3).",
    "model.add_unit_offset": "RMSNorm scales by (1 + w), w starting at 0 (Gemma).",
    "model.use_sliding_window": "Qwen2's sliding-window attention for layers from `max_window_layers` on.",
    "model.sliding_window": "Keys a windowed layer attends to (the query included); required when the window is on.",
    "model.max_window_layers": "Layers before this index attend to the whole sequence; later ones to the window.",
    "model.enable_qkv_fusion": (
        "One fused wqkv projection instead of wq/wk/wv; None: the family's layout (INTERNLM2, "
        "INTERNLM3, BAICHUAN2 fused)."
    ),
    "model.qk_norm": "An RMSNorm over every q and k head before RoPE (Qwen3); None: the family's default.",
    "model.tie_word_embeddings": (
        "The head is the embedding table transposed; None: the family's default (GEMMA tied, others untied)."
    ),
    "model.qk_interleaved": (
        "RoPE rotates adjacent lane pairs (InternEvo's own layout) instead of halves (Hugging Face's)."
    ),
    "model.adapt_hf": (
        "True: the weights are in the Hugging Face layout (RoPE over halves); must be the opposite of "
        "`qk_interleaved` when both are given."
    ),
    "model.max_position_embeddings": "Positions the model was trained for; dynamic NTK RoPE scales past it.",
    "model.use_dynamic_ntk_rope": "Dynamic NTK RoPE: the base grows once a row is longer than max_position_embeddings.",
    "model.residual_in_fp32": "Keep the residual stream in fp32 instead of the compute dtype.",
    "model.drop_rate": "Dropout rate; only 0 is implemented (another value is refused when the model is built).",
    "model.attn_drop_rate": "Attention dropout rate; only 0 is implemented (refused otherwise).",
    "model.is_reward": "A reward-model head; refused when True.",
    "model.dropout_selective_checkpoint": (
        "In InternEvo, recomputes dropout in the backward pass instead of storing its mask. No effect "
        "here: dropout is not implemented (rates must be 0)."
    ),
    "model.use_scaled_init": (
        "True: wo and w2 start with a std divided by sqrt(2 * (layer + 1)); False: a flat std (0.0015 "
        "for INTERNLM, as in InternEvo)."
    ),
    "model.use_swiglu": "True: SwiGLU MLP; False: GeGLU.",
    "model.norm_head": "Baichuan2's NormHead: each vocabulary column of the head normalised before the projection.",
    "model.deepnorm": "DeepNorm residual scaling; refused when True (InternEvo dropped it too).",
    "model.init_type": 'Initialisation scheme; only "normal" is implemented (refused otherwise).',
    "model.embedding_init_std": "Std of the embedding initialisation; None: the family's own.",
    "model.attn_wqkv_init_std": "Std of the q/k/v projections' initialisation; None: the family's own.",
    "model.attn_other_init_std": "Std of the attention output projection's initialisation; None: the family's own.",
    "model.ffn_uplayer_init_std": "Std of the MLP's w1/w3 initialisation; None: the family's own.",
    "model.ffn_other_init_std": "Std of the MLP's w2 (and MoE router) initialisation; None: the family's own.",
    "model.out_head_init_std": "Std of the head's initialisation; None: the family's own.",
    "model.mlp_layer_fusion": (
        "Fuses w1 and w3 into one matmul in InternEvo. No effect here: whether they run as one kernel "
        "is XLA's choice; results are the same."
    ),
    "model.num_experts": "Experts per MoE layer; 1 is a dense model (docs/moe.md).",
    "model.top_k": "Experts each token is routed to.",
    "model.num_shared_experts": "Shared experts every token goes through, next to the routed ones.",
    "model.moe_use_residual": "InternEvo's older switch for one shared expert (used when num_shared_experts is 0).",
    "model.moe_type": '"GShard" (capacity, dropped tokens) or "Dropless"; "MegaBlock" is refused (docs/moe.md).',
    "model.moe_layer_kwargs": (
        "Routing options: capacity_factor, min_capacity, drop_tokens, scoring_func, "
        "normalize_expert_weights, ... (docs/moe.md); an unknown key is refused."
    ),
    "model.attn_impl": (
        '"auto", "cudnn", "pallas_gpu", "splash" or "xla": the attention backend; "auto" takes the first '
        "that can run on this platform (docs/attention.md)."
    ),
    "model.scan_layers": (
        "Run the layers as one lax.scan over stacked weights (faster compile, usually slower steps); "
        "None: stacked exactly when `parallel.pipeline.size > 1`."
    ),
    "model.remat_policy": (
        'What the rematerialised layers keep: "full" nothing, "save_matmuls" the matmul outputs, '
        '"none" switches rematerialisation off.'
    ),
    # ---- parallel ----------------------------------------------------------------------------
    "parallel": (
        "The device mesh: ZeRO / FSDP, tensor, pipeline, weight and expert parallelism; both InternEvo "
        "forms are accepted (docs/config.md, docs/parallel.md)."
    ),
    "parallel.zero1": 'The ZeRO group (the "fsdp" mesh axis); an integer is its size (InternEvo\'s old form).',
    "parallel.zero1.size": (
        "Devices the optimizer state is sharded over: <= 0 the whole data-parallel group, 1 none, "
        "else a divisor of it."
    ),
    "parallel.zero1.fsdp": "True: the weights are sharded over the ZeRO group too (FSDP / ZeRO-3).",
    "parallel.tensor": "Tensor parallelism; an integer is its size.",
    "parallel.tensor.size": "Devices each layer's weights (mtp/msp/fsp) or sequences (isp) are split over.",
    "parallel.tensor.mode": (
        '"mtp" (Megatron tensor parallel), "msp" / "fsp" (plus sequence parallel), or "isp" (sequence '
        "split through the whole layer, all-to-all around attention)."
    ),
    "parallel.tensor.enable_vit": (
        "Tensor parallelism of a vision encoder in InternEvo's multimodal models. No effect here: "
        "those models are refused."
    ),
    "parallel.pipeline": "Pipeline parallelism; an integer is its size.",
    "parallel.pipeline.size": "Pipeline stages; the layers are split over them.",
    "parallel.pipeline.interleaved_overlap": (
        "Overlaps the interleaved schedule's communication with compute in InternEvo. No effect here: "
        "XLA schedules the collectives of the compiled step."
    ),
    "parallel.pipeline.mode": (
        'InternEvo\'s pipeline schedule: "1F1B", "ZBH1" or "ZBV". No effect here: "1F1B" is the only '
        "one accepted; the zero-bubble modes are refused."
    ),
    "parallel.pipeline.use_zeropp": (
        "InternEvo's ZeRO++ (quantised communication). No effect here: only False is accepted; True is "
        "refused."
    ),
    "parallel.pipeline.zero_bubble": (
        "InternEvo's zero-bubble pipeline schedules. No effect here: only False is accepted; True is refused."
    ),
    "parallel.pipeline.decouple_grad": (
        "A ZeRO++ option of InternEvo. No effect here: ZeRO++ is not implemented."
    ),
    "parallel.weight": 'Weight parallelism (InternEvo\'s, with `tensor.mode="isp"`); an integer is its size.',
    "parallel.weight.size": (
        'With isp: devices the weights are sharded over (the "fsdp" mesh axis); > 1 needs '
        '`tensor.mode="isp"`.'
    ),
    "parallel.weight.overlap": (
        "Overlaps InternEvo's weight all-gathers / reduce-scatters with compute. No effect here: XLA "
        "schedules the collectives."
    ),
    "parallel.weight.memory_pool": (
        "A preallocated buffer pool for gathered weights in InternEvo. No effect here: XLA assigns the "
        "buffers of the compiled step."
    ),
    "parallel.weight.launch_allgather_before": (
        "Which module's hook starts InternEvo's next weight all-gather. No effect here: XLA schedules "
        "the gathers itself."
    ),
    "parallel.weight.forward_overlap_per": (
        'Granularity ("layer" or "module") of InternEvo\'s gather prefetch. No effect here: XLA '
        "schedules the gathers itself."
    ),
    "parallel.sequence_parallel": (
        "Sequence parallelism; set from `tensor.mode` (msp, fsp, isp). In the old form, an integer "
        'tensor with True means mode "fsp".'
    ),
    "parallel.expert": 'Expert parallelism of MoE models (the "expert" mesh axis); an integer is its size.',
    "parallel.expert.size": (
        "Devices the experts are spread over; <= -1: the data-parallel size, capped at model.num_experts."
    ),
    "parallel.expert.no_tp": "True: expert weights are not split over tensor parallelism.",
    "parallel.expert_weight": "InternEvo's weight parallelism for expert weights (isp only).",
    "parallel.expert_weight.size": (
        '> 1: expert weights are sharded FSDP-style over the "fsdp" axis; needs `tensor.mode="isp"`.'
    ),
    "parallel.expert_weight.overlap": (
        "As `parallel.weight.overlap`, for expert weights. No effect here: XLA schedules the collectives."
    ),
    "parallel.expert_weight.memory_pool": (
        "As `parallel.weight.memory_pool`, for expert weights. No effect here: XLA assigns the buffers."
    ),
    "parallel.expert_weight.launch_allgather_before": (
        "As `parallel.weight.launch_allgather_before`, for expert weights. No effect here: XLA "
        "schedules the gathers itself."
    ),
    "parallel.expert_weight.forward_overlap_per": (
        "As `parallel.weight.forward_overlap_per`, for expert weights. No effect here: XLA schedules "
        "the gathers itself."
    ),
    "parallel.expert_zero1": (
        "A separate ZeRO group for expert parameters in InternEvo. No effect here: expert parameters' "
        "optimizer state is sharded by `zero1` like every other parameter."
    ),
    "parallel.sequence_2D": (
        "InternEvo's 2D (head x context) sequence parallelism. No effect here: only `enable=False` is "
        "accepted; True is refused."
    ),
    "parallel.gqa": (
        "A grouped-query-attention switch of InternEvo's parallel settings. No effect here: GQA follows "
        "from `model.num_kv_attention_heads` and the rules table."
    ),
    "parallel.fsdp": (
        "InternEvo's PyTorch FSDP switch `fsdp=dict(enable=..., mode=..., init_method=...)`. No effect "
        "here: `enable=True` is read as `parallel.zero1.fsdp=True`; its other keys steer PyTorch's FSDP only."
    ),
    # ---- ckpt --------------------------------------------------------------------------------
    "ckpt": "Saving, loading and resuming checkpoints (docs/checkpoint.md).",
    "ckpt.enable_save_ckpt": "Save checkpoints during training.",
    "ckpt.save_ckpt_folder": (
        'Where checkpoints go: "local:/path" (or a bare path) or "boto3:s3://bucket/prefix".'
    ),
    "ckpt.load_ckpt_folder": (
        "Legacy: a checkpoint to load model, sampler and optimizer from (without the optimizer when "
        "`load_optimizer=False`), used when `load_ckpt_info` is absent."
    ),
    "ckpt.load_ckpt_info": (
        "The checkpoint to start from when not auto-resuming: "
        'dict(path, content=("model",), ckpt_type="internevo"); a path of None loads nothing.'
    ),
    "ckpt.load_ckpt_info.path": "A checkpoint folder, or a save folder (its newest complete checkpoint).",
    "ckpt.load_ckpt_info.content": (
        'What to load: any of "model", "sampler", "optimizer", "scheduler", or ("all",).'
    ),
    "ckpt.load_ckpt_info.ckpt_type": (
        '"internevo" (this trainer\'s checkpoints or InternEvo\'s .pt folders; "internlm" means the '
        'same) or "hf" (a Hugging Face folder; "hf_model" and "hf_llama" mean the same).'
    ),
    "ckpt.auto_resume": (
        "Resume from the newest complete checkpoint in `save_ckpt_folder` when there is one; "
        "`load_ckpt_info` is used only when this is False."
    ),
    "ckpt.checkpoint_every": 'Save every N steps; None or float("inf"): never by step count.',
    "ckpt.async_upload": "S3 checkpoints: upload in the background while training goes on.",
    "ckpt.async_upload_tmp_folder": (
        "Local staging folder of S3 checkpoints before their upload; must be shared by all hosts of a "
        "multi-host run."
    ),
    "ckpt.oss_snapshot_freq": (
        'Save a snapshot every N steps into two alternating slots; None or float("inf"): no snapshots.'
    ),
    "ckpt.stop_file_path": (
        "A file you write while training runs: -N saves at step N and goes on, N saves at step N and exits."
    ),
    "ckpt.snapshot_ckpt_folder": (
        "Where the two snapshot slots go (default `<save_ckpt_folder>/snapshot`); same storage as "
        "`save_ckpt_folder`."
    ),
    "ckpt.universal_ckpt": (
        "InternEvo's universal (layout-independent) checkpoint format. No effect here: every checkpoint "
        "already restores onto any mesh."
    ),
    "ckpt.load_model_only_folder": (
        "Legacy: load only the model from this folder, used when `load_ckpt_info` is absent."
    ),
    "ckpt.load_given_ckpt": "Legacy: True turns `auto_resume` off (the given checkpoint is loaded instead).",
    "ckpt.load_optimizer": "Legacy: with `load_ckpt_folder`, False leaves the optimizer state out.",
    "ckpt.keep_last_n": "Keep only the newest N regular checkpoints; None keeps all.",
    "ckpt.enable_internevo2hf_ckpt": (
        "Write a Hugging Face copy `<save_ckpt_folder>/<step>_hf` of every regular checkpoint."
    ),
    "ckpt.s3_connect_timeout_s": "Seconds each S3 request waits to connect to the endpoint.",
    "ckpt.s3_read_timeout_s": (
        "Seconds each S3 transfer request (upload, download, marker, delete) waits for the endpoint's answer."
    ),
    "ckpt.s3_probe_timeout_s": (
        "Seconds the start-up check of the bucket and each listing request wait for the endpoint's "
        "answer; they are tried once, so a silent endpoint stops the start in about this long."
    ),
    "ckpt.s3_attempts": (
        "Tries of each S3 operation of a save (listing, upload, marker) and of each downloaded file, "
        "with pauses of 2 s, 4 s, ... between them."
    ),
    "ckpt.upload_timeout_s": (
        "Seconds a save's whole S3 upload may take; past it the checkpoint is reported as not saved "
        "and training goes on."
    ),
    "ckpt.save_timeout_s": (
        "Seconds a save's background work (writing, upload, marker, Hugging Face copy, pruning) may "
        "take before the next save or the end of training stops the run with an error."
    ),
    "ckpt.agreement_timeout_s": (
        "Seconds a process waits for the others where all must meet (the per-step stop/signal "
        "agreement, start-up checks, restores); past it the run stops naming the missing processes."
    ),
    # ---- grad_scaler -------------------------------------------------------------------------
    "grad_scaler": "The dynamic loss scale of fp16 and bf16 training (docs/training.md).",
    "grad_scaler.fp16": "The loss scale's start, floor and growth interval.",
    "grad_scaler.fp16.initial_scale": "Loss scale of the first step.",
    "grad_scaler.fp16.min_scale": "The scale never backs off below this; None: no floor.",
    "grad_scaler.fp16.growth_interval": "Overflow-free steps in a row after which the scale grows.",
    "grad_scaler.growth_factor": "Factor the scale grows by.",
    "grad_scaler.backoff_factor": "Factor the scale shrinks by after overflows.",
    "grad_scaler.max_scale": "The scale never grows above this; None: no cap.",
    "grad_scaler.hysteresis": "Overflowing steps (skipped) before the scale backs off.",
    # ---- hybrid_zero_optimizer ---------------------------------------------------------------
    "hybrid_zero_optimizer": (
        "InternEvo's ZeRO optimizer settings; here only gradient clipping has an effect (sharding "
        "follows `parallel.zero1`)."
    ),
    "hybrid_zero_optimizer.overlap_sync_grad": (
        "Overlaps gradient reduction with the backward pass in InternEvo. No effect here: XLA schedules "
        "the reductions of the compiled step."
    ),
    "hybrid_zero_optimizer.overlap_sync_param": (
        "Overlaps the parameter broadcast after the update with the next forward in InternEvo. No effect "
        "here: XLA schedules the gathers."
    ),
    "hybrid_zero_optimizer.reduce_bucket_size": (
        "Bytes per NCCL gradient-reduction bucket in InternEvo. No effect here: XLA forms its own "
        "collectives."
    ),
    "hybrid_zero_optimizer.clip_grad_norm": "Clip the global gradient norm to this; 0 disables clipping.",
    "hybrid_zero_optimizer.zero_overlap_communication": (
        "Older name of `overlap_sync_grad`. No effect here: see `overlap_sync_grad`."
    ),
    "hybrid_zero_optimizer.use_split_tensor_optim": (
        "InternEvo's optimizer that splits tensors into blocks for the ZeRO partition. No effect here: "
        "the rules table shards the optimizer state."
    ),
    "hybrid_zero_optimizer.all_gather_size": (
        "Bytes per all-gather of `use_split_tensor_optim`. No effect here: XLA forms its own collectives."
    ),
    # ---- loss ---------------------------------------------------------------------------------
    "loss": "The training loss (docs/training.md).",
    "loss.label_smoothing": "Label smoothing of the cross-entropy, in [0, 1).",
    "loss.moe_loss_coeff": "Weight of the MoE load-balancing loss in the total loss.",
    "loss.op_type": (
        "Which cross-entropy kernel InternEvo uses. No effect here: every InternEvo loss op computes the "
        "same cross-entropy, which the chunked loss computes here."
    ),
    "loss.ce_chunk_size": (
        "Tokens of each row per chunk of the fused head + cross-entropy, so the fp32 logits exist one "
        "chunk at a time; 0 computes the full logits."
    ),
    # ---- adam --------------------------------------------------------------------------------
    "adam": "AdamW (docs/training.md).",
    "adam.lr": "Peak learning rate (the lr_scheduler's warmup target).",
    "adam.adam_beta1": "Adam's beta1.",
    "adam.adam_beta2": "Adam's beta2 (the start of the beta2 schedule).",
    "adam.adam_beta2_c": "Exponent of the beta2 schedule; 0 keeps beta2 constant.",
    "adam.adam_eps": "Adam's epsilon.",
    "adam.weight_decay": "Decoupled weight decay; InternEvo decays every parameter.",
    "adam.exclude_norm_and_bias_from_decay": "True: no weight decay on norm weights and biases.",
    # ---- lr_scheduler ------------------------------------------------------------------------
    "lr_scheduler": "Linear warmup, then cosine decay (InternEvo's FineTuneCosineAnnealingWarmupLR).",
    "lr_scheduler.total_steps": "Steps the schedule spans.",
    "lr_scheduler.init_steps": "Steps at lr 0 before the warmup starts.",
    "lr_scheduler.warmup_ratio": "Share of total_steps spent warming up linearly to `adam.lr`.",
    "lr_scheduler.eta_min": "Learning rate at the end of the cosine decay.",
    "lr_scheduler.last_epoch": (
        "PyTorch's scheduler resume index. No effect here: the schedule's position is restored from "
        "the checkpoint's optimizer state."
    ),
    # ---- beta2_scheduler ---------------------------------------------------------------------
    "beta2_scheduler": "Adam's beta2 over time: max(init_beta2, 1 - 1/t^c), or constant for c <= 0.",
    "beta2_scheduler.init_beta2": "Starting (and smallest) beta2.",
    "beta2_scheduler.c": "Exponent of the schedule; <= 0 keeps beta2 constant.",
    "beta2_scheduler.cur_iter": (
        "The scheduler's resume index in InternEvo. No effect here: the position is restored from the "
        "checkpoint's optimizer state."
    ),
    # ---- monitor -----------------------------------------------------------------------------
    "monitor": "Alerts, TensorBoard, profiling and the progress bar (docs/monitoring.md, docs/alerts.md).",
    "monitor.alert": "Alerts, heartbeat and the hang watchdog (docs/alerts.md).",
    "monitor.alert.enable_feishu_alert": (
        "Switches on the Feishu webhook, the light-monitor heartbeat and the alert file, as in InternEvo."
    ),
    "monitor.alert.feishu_alert_address": "A Feishu bot webhook URL that receives the alerts.",
    "monitor.alert.light_monitor_address": "Heartbeat endpoint: an http(s) URL or host:port.",
    "monitor.alert.alert_file_path": "A file that gets one JSON line per alert.",
    "monitor.alert.webhook_address": "Any http(s) endpoint; gets each alert as JSON, independently of the Feishu switch.",
    "monitor.alert.hang_timeout_s": (
        'No step for this many seconds logs every thread\'s stack and sends a "hang" alert; 0 turns '
        "the watchdog off."
    ),
    "monitor.alert.heartbeat_interval_s": "At most one heartbeat per this many seconds; 0: after every step.",
    "monitor.alert.request_timeout_s": (
        "Timeout of each alert request, and the longest wait for unsent alerts when the run ends."
    ),
    "monitor.alert.retries": "Extra attempts of a failed alert delivery, with doubling waits from 0.5 s.",
    "monitor.alert.loss_spike_ratio": (
        "A step whose loss exceeds this many times the previous step's sends an alert; None: off."
    ),
    "monitor.tensorboard": "TensorBoard writer settings.",
    "monitor.tensorboard.queue_max_length": "Steps whose scalars are held before they are written to disk.",
    "monitor.profiler": "The step window that `--profiling` traces.",
    "monitor.profiler.skip_steps": "Steps run before the trace starts (compilation and warm-up).",
    "monitor.profiler.active_steps": "Steps traced.",
    "monitor.profiler.memory_profile": "Also save a device-memory profile (pprof) after the traced steps.",
    "monitor.progress_bar": "Show a progress bar; None: shown when stdout is a terminal.",
    # ---- generation ----------------------------------------------------------------------------
    "generation": (
        "InternEvo's `generation` dict: settings of text generation, the defaults of "
        "`python -m internevo_jax.generate` (docs/generation.md)."
    ),
    "generation.ckpt_folder": "Checkpoint to generate from; None: the newest one under `ckpt.save_ckpt_folder`.",
    "generation.output_folder": (
        "Where InternEvo's dataset mode writes its generations. No effect here: that mode (prompts "
        "from a folder, outputs to .bin files) is not implemented."
    ),
    "generation.data_folder": (
        "The prompts of InternEvo's dataset mode. No effect here: that mode is not implemented."
    ),
    "generation.batch_size": "Prompts per batch; None: `data.valid_micro_num * data.micro_bsz`.",
    "generation.eos_id": "A token id, or a list of ids, that ends a row.",
    "generation.additional_eos_token_list": "More token ids that end a row.",
    "generation.bos_id": "Put before a text prompt; also fills a row once it has ended (InternEvo's padding).",
    "generation.max_length": "Tokens per row: prompt and new tokens together.",
    "generation.do_sample": "True: sample the next token; False: greedy decoding.",
    "generation.temperature": "Sampling temperature; must be greater than 0 when sampling.",
    "generation.num_beams": (
        "Beam-search width in InternEvo. No effect here: beam search is not implemented; 1 is "
        "accepted, more is refused."
    ),
    "generation.top_k": "Sample among the k most likely tokens; 0: off.",
    "generation.top_p": "Sample among the most likely tokens whose probabilities add up to top_p; 1: off.",
    "generation.repetition_penalty": (
        "Tokens already in the row get positive logits divided and negative ones multiplied by it; 1: off."
    ),
    "generation.length_penalty": (
        "InternEvo's length penalty outside beam search: logits other than the eos ones are divided by "
        "the row's length to this power; 1: off."
    ),
}
