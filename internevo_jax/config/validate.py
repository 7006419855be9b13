"""Value checks on a resolved Config: impossible or unsupported settings raise ConfigError.

Types were checked while building; here each rule names the key, the value and the fix. The
model registry, not this module, checks ``model_type`` and attention backend names.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from internevo_jax.names import NORM_TYPES, REMAT_POLICY_NAMES

from .errors import ConfigError
from .schema import CKPT_CONTENT, DTYPES, PIPELINE_MODES, TENSOR_MODES, Config, GenerationConfig


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def require(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{self.source}: '{key}' {message}", key=key, source=self.source)

    def positive(self, value: float, key: str) -> None:
        self.require(value > 0, key, f"must be greater than 0, got {value!r}.")

    def non_negative(self, value: float, key: str) -> None:
        self.require(value >= 0, key, f"must be 0 or more, got {value!r}.")

    def one_of(self, value: str, choices, key: str) -> None:
        self.require(
            value in choices, key, f"is {value!r}; it must be one of {', '.join(map(repr, choices))}."
        )


_RANGE = re.compile(r"^\s*\d+\s*(-\s*\d+\s*)?$")


def _check_data(cfg: Config, c: _Checker) -> None:
    d = cfg.data
    for key in ("seq_len", "micro_num", "micro_bsz", "total_steps", "valid_micro_num"):
        c.positive(getattr(d, key), f"data.{key}")
    for key in ("valid_every", "min_length", "num_worker"):
        c.non_negative(getattr(d, key), f"data.{key}")
    if cfg.parallel.pipeline.size == 1:
        c.require(
            d.gradient_accumulation == d.micro_num,
            "data.gradient_accumulation",
            f"is {d.gradient_accumulation} but must equal data.micro_num ({d.micro_num}) without pipeline "
            "parallelism (as in InternEvo); remove gradient_accumulation, micro_num sets it.",
        )
    if d.min_length_dict:
        bad = [
            (k, v)
            for k, v in d.min_length_dict.items()
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0
        ]
        if bad:
            c.require(
                False,
                "data.min_length_dict",
                f"has the entry {bad[0][0]!r}: {bad[0][1]!r}; it must map a substring of a .bin file's path "
                "(a str) to that file's minimum sample length (an int, 0 or more), e.g. {'arxiv': 50}.",
            )
    if d.rampup_batch_size:
        parts = d.rampup_batch_size.split()
        c.require(
            len(parts) == 3 and all(p.isdigit() for p in parts),
            "data.rampup_batch_size",
            f'is {d.rampup_batch_size!r}; it must be three integers "start increment every" '
            '(e.g. "192 24 8") or "" to disable.',
        )
    if d.skip_batches:
        c.require(
            all(_RANGE.match(item) for item in d.skip_batches.split(",")),
            "data.skip_batches",
            f'is {d.skip_batches!r}; write comma-separated steps or inclusive ranges like "100-200,350".',
        )


def _check_model(cfg: Config, c: _Checker) -> None:
    m = cfg.model
    for key in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_attention_heads", "vocab_size"):
        c.positive(getattr(m, key), f"model.{key}")
    for key in ("num_chunks", "multiple_of", "mlp_ratio", "layer_norm_epsilon", "rope_base"):
        c.positive(getattr(m, key), f"model.{key}")
    c.require(
        m.head_dim > 0 and m.head_dim % 2 == 0,
        "model.head_dim",
        f"is {m.head_dim}; it must be a positive even number (rotary embeddings rotate pairs of lanes).",
    )
    c.require(
        m.num_attention_heads % m.num_kv_attention_heads == 0,
        "model.num_kv_attention_heads",
        f"({m.num_kv_attention_heads}) must divide model.num_attention_heads ({m.num_attention_heads}): "
        f"{m.num_attention_heads} % {m.num_kv_attention_heads} = "
        f"{m.num_attention_heads % m.num_kv_attention_heads}; each kv head serves a whole group of query heads.",
    )
    c.require(
        m.num_layers % m.num_chunks == 0,
        "model.num_chunks",
        f"({m.num_chunks}) must divide model.num_layers ({m.num_layers}): "
        f"{m.num_layers} % {m.num_chunks} = {m.num_layers % m.num_chunks}.",
    )
    c.non_negative(m.max_window_layers, "model.max_window_layers")
    if m.use_sliding_window:
        c.require(
            m.sliding_window is not None and m.sliding_window > 0,
            "model.sliding_window",
            f"is {m.sliding_window!r} but model.use_sliding_window=True needs the window length in tokens "
            "(e.g. sliding_window=4096), or set use_sliding_window=False.",
        )
    if not isinstance(m.checkpoint, bool):
        c.require(
            0.0 <= m.checkpoint <= 1.0,
            "model.checkpoint",
            f"is {m.checkpoint!r}; it must be True, False or a fraction of layers between 0 and 1.",
        )
    c.require(
        m.dtype in DTYPES,
        "model.dtype",
        f'is {m.dtype!r}; supported: "torch.float16", "torch.half", "torch.bfloat16", '
        f'"torch.float32", "torch.tf32" (or float16/bfloat16/float32/fp16/bf16/fp32/tf32).',
    )
    c.one_of(m.norm_type, NORM_TYPES, "model.norm_type")
    c.one_of(m.remat_policy, REMAT_POLICY_NAMES, "model.remat_policy")
    c.require(bool(m.attn_impl), "model.attn_impl", 'must not be empty; use "auto".')
    for key in ("drop_rate", "attn_drop_rate"):
        value = getattr(m, key)
        c.require(0.0 <= value < 1.0, f"model.{key}", f"must be in [0, 1), got {value!r}.")
    c.require(m.num_experts >= 1, "model.num_experts", f"must be 1 (dense) or more, got {m.num_experts}.")
    if m.num_experts > 1:
        c.require(
            1 <= m.top_k <= m.num_experts,
            "model.top_k",
            f"is {m.top_k}; each token picks top_k of the model.num_experts = {m.num_experts} experts, so "
            f"top_k must be between 1 and {m.num_experts}.",
        )
        c.require(
            cfg.parallel.pipeline.size == 1,
            "parallel.pipeline.size",
            f"is {cfg.parallel.pipeline.size}; pipeline parallelism of mixture-of-experts models is not "
            "implemented: use parallel.pipeline.size=1 and spread the experts with parallel.expert.size.",
        )
    c.require(not m.is_reward, "model.is_reward", "is True; reward-model heads are not supported, use False.")
    c.require(
        not m.deepnorm,
        "model.deepnorm",
        "is True; deepnorm is not supported (InternEvo dropped it too), use False.",
    )


def _check_parallel(cfg: Config, c: _Checker) -> None:
    p = cfg.parallel
    for key in ("tensor", "pipeline", "weight"):
        size = getattr(p, key).size
        c.require(size >= 1, f"parallel.{key}.size", f"must be 1 or more, got {size}.")
    c.one_of(p.tensor.mode, TENSOR_MODES, "parallel.tensor.mode")
    c.one_of(p.pipeline.mode, PIPELINE_MODES, "parallel.pipeline.mode")
    c.require(
        p.weight.size <= 1 or p.tensor.mode == "isp",
        "parallel.weight.size",
        f'is {p.weight.size} but weight parallelism needs parallel.tensor.mode="isp" (InternEvo\'s rule), '
        f"the mode is {p.tensor.mode!r}; set weight.size=1, or use zero1=dict(size=..., fsdp=True) to shard weights.",
    )
    c.require(
        p.expert_weight.size >= 1,
        "parallel.expert_weight.size",
        f"must be 1 or more, got {p.expert_weight.size}.",
    )
    c.require(
        p.expert_weight.size <= 1 or p.tensor.mode == "isp",
        "parallel.expert_weight.size",
        f'is {p.expert_weight.size} but expert weight parallelism needs parallel.tensor.mode="isp" '
        f"(InternEvo's rule), the mode is {p.tensor.mode!r}; set expert_weight.size=1.",
    )


def _check_optim(cfg: Config, c: _Checker) -> None:
    a = cfg.adam
    c.non_negative(a.lr, "adam.lr")
    for key in ("adam_beta1", "adam_beta2"):
        value = getattr(a, key)
        c.require(0.0 <= value < 1.0, f"adam.{key}", f"must be in [0, 1), got {value!r}.")
    c.positive(a.adam_eps, "adam.adam_eps")
    c.non_negative(a.weight_decay, "adam.weight_decay")
    s = cfg.lr_scheduler
    c.require(
        0.0 <= s.warmup_ratio <= 1.0,
        "lr_scheduler.warmup_ratio",
        f"must be between 0 and 1 (a fraction of total_steps), got {s.warmup_ratio!r}.",
    )
    c.positive(s.total_steps, "lr_scheduler.total_steps")
    c.non_negative(s.init_steps, "lr_scheduler.init_steps")
    c.non_negative(s.eta_min, "lr_scheduler.eta_min")
    g = cfg.grad_scaler
    c.positive(g.fp16.initial_scale, "grad_scaler.fp16.initial_scale")
    c.positive(g.fp16.growth_interval, "grad_scaler.fp16.growth_interval")
    if g.fp16.min_scale is not None:
        c.positive(g.fp16.min_scale, "grad_scaler.fp16.min_scale")
    if g.fp16.min_scale is not None and g.max_scale is not None:
        c.require(
            g.fp16.min_scale <= g.max_scale,
            "grad_scaler.max_scale",
            f"({g.max_scale}) must not be below grad_scaler.fp16.min_scale ({g.fp16.min_scale}).",
        )
    c.require(
        g.growth_factor >= 1.0, "grad_scaler.growth_factor", f"must be 1 or more, got {g.growth_factor!r}."
    )
    c.require(
        0.0 < g.backoff_factor <= 1.0,
        "grad_scaler.backoff_factor",
        f"must be in (0, 1], got {g.backoff_factor!r}.",
    )
    c.positive(g.hysteresis, "grad_scaler.hysteresis")
    c.non_negative(cfg.hybrid_zero_optimizer.clip_grad_norm, "hybrid_zero_optimizer.clip_grad_norm")
    ls = cfg.loss.label_smoothing
    c.require(0.0 <= ls < 1.0, "loss.label_smoothing", f"must be in [0, 1), got {ls!r}.")
    chunk = cfg.loss.ce_chunk_size
    c.require(
        isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0,
        "loss.ce_chunk_size",
        f"must be a whole number of tokens, 0 or more, got {chunk!r}; 0 computes the loss on the full "
        "logits, N > 0 forms them N tokens of each row at a time.",
    )


def _check_ckpt(cfg: Config, c: _Checker) -> None:
    k = cfg.ckpt
    if k.checkpoint_every is not None:
        c.positive(k.checkpoint_every, "ckpt.checkpoint_every")
    if k.oss_snapshot_freq is not None:
        c.non_negative(k.oss_snapshot_freq, "ckpt.oss_snapshot_freq")
    if k.keep_last_n is not None:
        c.positive(k.keep_last_n, "ckpt.keep_last_n")
    for key in (
        "s3_connect_timeout_s",
        "s3_read_timeout_s",
        "s3_probe_timeout_s",
        "upload_timeout_s",
        "save_timeout_s",
        "agreement_timeout_s",
    ):
        value = getattr(k, key)
        c.require(
            math.isfinite(value) and value > 0,
            f"ckpt.{key}",
            f"must be a finite number of seconds greater than 0 (the longest wait it sets), got {value!r}.",
        )
    c.require(
        k.s3_attempts >= 1,
        "ckpt.s3_attempts",
        f"must be 1 or more (tries of each S3 operation), got {k.s3_attempts!r}.",
    )
    info = k.load_ckpt_info
    if info is not None:
        c.require(bool(info.path), "ckpt.load_ckpt_info.path", "must name the checkpoint folder to load.")
        c.require(
            bool(info.content), "ckpt.load_ckpt_info.content", 'must list what to load, e.g. ("model",).'
        )
        for item in info.content:
            c.one_of(item, CKPT_CONTENT, "ckpt.load_ckpt_info.content")
        c.require(
            bool(info.ckpt_type), "ckpt.load_ckpt_info.ckpt_type", 'must not be empty; use "internevo".'
        )


# InternEvo features this project lacks, asked for by a value of a key that is otherwise accepted:
# (key, is the feature asked for?, what to do instead).
UNSUPPORTED_FEATURES = (
    (
        "int8_training",
        lambda cfg: bool(cfg.extra.get("int8_training")),
        "is True: int8 training (quantised matmuls, int8_mode) is not implemented here; remove it or set "
        "it to False to train in model.dtype.",
    ),
    (
        "model.adapt_hf",
        lambda cfg: cfg.model_type.endswith("_FROM_HF") and cfg.model.qk_interleaved,
        "must be True for a *_FROM_HF model_type: its weights are in the Hugging Face layout, whose "
        "rotary embedding is not interleaved (model.qk_interleaved=False).",
    ),
    (
        "parallel.sequence_2D.enable",
        lambda cfg: bool(cfg.parallel.sequence_2D.get("enable")),
        "is True: 2D sequence parallelism (head x context parallel attention) is not implemented here. "
        'Set it to False and use parallel.tensor=dict(size=N, mode="isp") (or "msp"/"fsp") for sequence '
        "parallelism.",
    ),
    (
        "parallel.pipeline.zero_bubble",
        lambda cfg: cfg.parallel.pipeline.zero_bubble,
        "is True: zero-bubble pipeline schedules are not implemented here; set it to False (the pipeline "
        "runs 1F1B order, interleaved when model.num_chunks > 1).",
    ),
    (
        "parallel.pipeline.mode",
        lambda cfg: str(cfg.parallel.pipeline.mode).upper() != "1F1B",
        'is not "1F1B": the zero-bubble schedules (ZBH1, ZBV) are not implemented here; use '
        'mode="1F1B" (interleaved when model.num_chunks > 1).',
    ),
    (
        "parallel.pipeline.use_zeropp",
        lambda cfg: cfg.parallel.pipeline.use_zeropp,
        "is True: ZeRO++ (quantised weight and gradient communication) is not implemented here; set it to "
        "False.",
    ),
)


def _check_unsupported(cfg: Config, c: _Checker) -> None:
    for key, asked, message in UNSUPPORTED_FEATURES:
        c.require(not asked(cfg), key, message)


def _check_tensorboard_and_profiler(cfg: Config, c: _Checker) -> None:
    c.require(
        cfg.monitor.tensorboard.queue_max_length >= 1,
        "monitor.tensorboard.queue_max_length",
        "must be at least 1 (the number of steps whose scalars are held before they are written).",
    )
    profiler = cfg.monitor.profiler
    c.require(profiler.skip_steps >= 0, "monitor.profiler.skip_steps", "must be 0 or more.")
    c.require(profiler.active_steps >= 1, "monitor.profiler.active_steps", "must be at least 1.")


def _shown_url(url: str) -> str:
    """`url` as scheme://host only: webhook URLs keep their secret in the path or query."""
    if "://" not in url:
        head = re.split(r"[/?#@]", url, maxsplit=1)[0]
        return repr(head + ("/…" if len(head) < len(url) else ""))
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "an unparsable URL"
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return repr(f"{parts.scheme}://{host}{rest}")


def _check_alert(cfg: Config, c: _Checker) -> None:
    a = cfg.monitor.alert
    urls = [("webhook_address", a.webhook_address)]
    if a.enable_feishu_alert:  # InternEvo reads the addresses only when alerts are on
        urls += [
            ("feishu_alert_address", a.feishu_alert_address),
            ("light_monitor_address", a.light_monitor_address),
        ]
    for key, url in urls:
        if not url:
            continue
        # a light-monitor address may be a bare host:port (it then means http://host:port/)
        full = url if ("://" in url or key != "light_monitor_address") else f"http://{url}"
        try:
            parts = urlsplit(full)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        c.require(
            ok,
            f"monitor.alert.{key}",
            f'must be an http:// or https:// URL with a host (e.g. "https://hooks.example.com/alerts/TOKEN"), '
            f"got {_shown_url(url)} (shown without its path and query, which may hold a secret). Alerts are "
            "sent by HTTP POST only; fix the URL, or set the key to None to send nothing there.",
        )
    for key, zero in (
        ("hang_timeout_s", " 0 turns the hang watchdog off."),
        ("heartbeat_interval_s", " 0 sends a heartbeat after every step."),
    ):
        value = getattr(a, key)
        c.require(
            math.isfinite(value) and value >= 0,
            f"monitor.alert.{key}",
            f"must be a finite number of seconds, 0 or more, got {value!r}.{zero}",
        )
    c.require(
        math.isfinite(a.request_timeout_s) and a.request_timeout_s > 0,
        "monitor.alert.request_timeout_s",
        f"must be a finite number of seconds greater than 0 (each alert request gives up after it), "
        f"got {a.request_timeout_s!r}.",
    )
    c.require(
        a.retries >= 0,
        "monitor.alert.retries",
        f"must be 0 or more (extra attempts of a failed alert delivery), got {a.retries!r}.",
    )
    if a.loss_spike_ratio is not None:
        c.require(
            math.isfinite(a.loss_spike_ratio) and a.loss_spike_ratio > 1.0,
            "monitor.alert.loss_spike_ratio",
            f"must be greater than 1 (a step's loss above this many times the previous step's is a spike; "
            f"InternEvo uses 1.5), got {a.loss_spike_ratio!r}; None turns loss-spike alerts off.",
        )


def generation_problems(g: GenerationConfig, vocab_size: int) -> list[tuple[str, str]]:
    """(key, what is wrong) for each bad value of generation settings `g`; the generate command
    line checks its flags with the same rules."""
    out = []
    if g.batch_size is not None and g.batch_size < 1:
        out.append(("batch_size", f"must be 1 or more (prompts per batch), got {g.batch_size}."))
    if g.max_length < 1:
        out.append(("max_length", f"must be 1 or more (prompt + new tokens), got {g.max_length}."))
    for key in ("eos_id", "additional_eos_token_list", "bos_id"):
        value = getattr(g, key)
        ids = () if value is None else (value,) if isinstance(value, int) else value
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            out.append((key, f"has {bad[0]}, outside the model's vocabulary [0, {vocab_size})."))
    if g.do_sample and not (math.isfinite(g.temperature) and g.temperature > 0):
        out.append(
            (
                "temperature",
                f"must be greater than 0 when sampling (do_sample=True), got {g.temperature!r}; "
                "set do_sample=False for greedy decoding.",
            )
        )
    if g.top_k < 0:
        out.append(("top_k", f"must be 0 (off) or more, got {g.top_k}."))
    if not 0.0 < g.top_p <= 1.0:
        out.append(("top_p", f"must be in (0, 1] (1 is off), got {g.top_p!r}."))
    if not (math.isfinite(g.repetition_penalty) and g.repetition_penalty > 0):
        out.append(
            ("repetition_penalty", f"must be greater than 0 (1 is off), got {g.repetition_penalty!r}.")
        )
    if not math.isfinite(g.length_penalty):
        out.append(("length_penalty", f"must be a finite number (1 is off), got {g.length_penalty!r}."))
    if g.num_beams != 1:
        out.append(
            (
                "num_beams",
                f"is {g.num_beams}; beam search is not implemented here, use num_beams=1 (greedy or sampling).",
            )
        )
    return out


def _check_generation(cfg: Config, c: _Checker) -> None:
    if cfg.generation is not None:
        for key, message in generation_problems(cfg.generation, cfg.model.vocab_size):
            c.require(False, f"generation.{key}", message)


def validate(cfg: Config, source: str) -> None:
    """Raise ConfigError for the first impossible value in ``cfg`` (a resolved Config)."""
    c = _Checker(source)
    c.require(bool(cfg.job_name), "JOB_NAME", "must not be empty.")
    _check_data(cfg, c)
    _check_model(cfg, c)
    _check_parallel(cfg, c)
    _check_optim(cfg, c)
    _check_ckpt(cfg, c)
    _check_tensorboard_and_profiler(cfg, c)
    _check_alert(cfg, c)
    _check_generation(cfg, c)
    _check_unsupported(cfg, c)
