"""Fill the derived fields of a freshly built Config (InternEvo's defaulting rules)."""

from __future__ import annotations

from dataclasses import replace

from .errors import ConfigError
from .schema import CkptConfig, Config, LoadCkptInfo, ModelConfig

# Other names of the checkpoint formats: old InternLM configs call InternEvo's own format
# "internlm"; InternEvo names a Hugging Face folder "hf_model" (any family) or "hf_llama".
CKPT_TYPE_ALIASES = {"internlm": "internevo", "hf_model": "hf", "hf_llama": "hf"}


def _resolve_ckpt(ckpt: CkptConfig, run_dir: str, source: str) -> CkptConfig:
    info = ckpt.load_ckpt_info
    if info is None:
        # Legacy keys, read the way InternEvo's ckpt_info_sanity_check reads them.
        if ckpt.load_model_only_folder is not None:
            if ckpt.load_ckpt_folder is not None:
                raise ConfigError(
                    f"{source}: 'ckpt.load_model_only_folder' and 'ckpt.load_ckpt_folder' are both set; "
                    f'keep one, or better use ckpt.load_ckpt_info=dict(path=..., content=("model",), '
                    f'ckpt_type="internevo").',
                    key="ckpt.load_model_only_folder",
                    source=source,
                )
            info = LoadCkptInfo(path=ckpt.load_model_only_folder, content=("model",))
        elif ckpt.load_ckpt_folder is not None:
            content = ("model", "sampler", "optimizer") if ckpt.load_optimizer else ("model", "sampler")
            info = LoadCkptInfo(path=ckpt.load_ckpt_folder, content=content)
    if info is not None and info.path is None:
        info = None  # InternEvo loads nothing when the path is None
    if info is not None:
        ckpt_type = info.ckpt_type.lower()
        info = replace(
            info,
            content=tuple(c.lower() for c in info.content),
            ckpt_type=CKPT_TYPE_ALIASES.get(ckpt_type, ckpt_type),
        )
    auto_resume = ckpt.auto_resume
    if auto_resume is None:
        auto_resume = True if ckpt.load_given_ckpt is None else not ckpt.load_given_ckpt
    save_folder = ckpt.save_ckpt_folder
    if ckpt.enable_save_ckpt and save_folder is None:
        save_folder = f"local:{run_dir}/checkpoints"
    return replace(ckpt, load_ckpt_info=info, auto_resume=auto_resume, save_ckpt_folder=save_folder)


def _head_dim(model: ModelConfig, source: str) -> int:
    """model.head_dim as given, else hidden_size / num_attention_heads (which must divide)."""
    if model.head_dim is not None:
        return model.head_dim
    heads, hidden = model.num_attention_heads, model.hidden_size
    if heads <= 0:
        return 0  # validate() names the bad head count
    if hidden % heads:
        raise ConfigError(
            f"{source}: 'model.hidden_size' ({hidden}) must be divisible by model.num_attention_heads "
            f"({heads}): {hidden} % {heads} = {hidden % heads}; choose a head count that divides the hidden "
            "size, or give model.head_dim explicitly (as Gemma's configs do).",
            key="model.hidden_size",
            source=source,
        )
    return hidden // heads


def _scan_layers(cfg: Config) -> bool:
    # Pipeline stages hold slices of the stacked layers; InternEvo's pipeline configs never say so.
    return cfg.parallel.pipeline.size > 1 if cfg.model.scan_layers is None else cfg.model.scan_layers


def _stacked_checkpoint(cfg: Config) -> bool | float:
    """model.checkpoint, rounded up to every layer when the layers are stacked only because of the
    pipeline and the fraction is partial: one scanned layer body has one remat policy. Recomputing
    more layers changes memory and time, never a result; `stacked_checkpoint_note` says so."""
    m = cfg.model
    partial = 0 < m.checkpoint_layers < m.num_layers
    return True if partial and m.scan_layers is None and _scan_layers(cfg) else m.checkpoint


def stacked_checkpoint_note(given: Config, resolved: Config) -> str | None:
    """The log line for a checkpoint fraction that `_stacked_checkpoint` rounded up, else None."""
    if given.model.checkpoint == resolved.model.checkpoint:
        return None
    return (
        f"model.checkpoint={given.model.checkpoint!r}: with parallel.pipeline.size="
        f"{given.parallel.pipeline.size} the layers are stacked (one layer body for all), so every "
        "layer is recomputed in the backward pass; results are the same, the activations need less "
        "memory and the step more time."
    )


def num_chunks_note(cfg: Config) -> str | None:
    """The log line for model.num_chunks > 1 without a pipeline (it has no effect then), else None."""
    if cfg.model.num_chunks <= 1 or cfg.parallel.pipeline.size != 1:
        return None
    return (
        f"model.num_chunks={cfg.model.num_chunks} has no effect with parallel.pipeline.size=1: chunks "
        "interleave the stages of a pipeline, and without one the layers run in order as one model. "
        "Set parallel.pipeline.size to 2 or more for the interleaved schedule, or remove the key."
    )


def resolve(cfg: Config, source: str) -> Config:
    """Return ``cfg`` with every derived field filled (packed_length, kv heads, schedules, ...)."""
    data, model = cfg.data, cfg.model
    data = replace(
        data,
        packed_length=data.seq_len * data.micro_bsz,
        gradient_accumulation=data.micro_num
        if data.gradient_accumulation is None
        else data.gradient_accumulation,
        batch_size=data.micro_num,
        valid_micro_num=data.micro_num if data.valid_micro_num is None else data.valid_micro_num,
        seed=cfg.seed if data.seed is None else data.seed,
    )

    qk_interleaved = model.qk_interleaved
    if model.adapt_hf is not None:
        if qk_interleaved is not None and qk_interleaved == model.adapt_hf:
            raise ConfigError(
                f"{source}: 'model.adapt_hf' and 'model.qk_interleaved' must be opposite (InternEvo's rule), "
                f"both are {model.adapt_hf}; remove adapt_hf and keep qk_interleaved.",
                key="model.qk_interleaved",
                source=source,
            )
        qk_interleaved = not model.adapt_hf
    model = replace(
        model,
        num_kv_attention_heads=(
            model.num_attention_heads
            if model.num_kv_attention_heads is None
            else model.num_kv_attention_heads
        ),
        qk_interleaved=bool(qk_interleaved),
        head_dim=_head_dim(model, source),
        scan_layers=_scan_layers(cfg),
        checkpoint=_stacked_checkpoint(cfg),
    )

    lr = cfg.lr_scheduler
    if lr.total_steps is None:
        lr = replace(lr, total_steps=data.total_steps)
    beta2 = cfg.beta2_scheduler
    beta2 = replace(
        beta2,
        init_beta2=cfg.adam.adam_beta2 if beta2.init_beta2 is None else beta2.init_beta2,
        c=cfg.adam.adam_beta2_c if beta2.c is None else beta2.c,
    )
    run_dir = cfg.run_dir if cfg.run_dir is not None else f"runs/{cfg.job_name}"
    return replace(
        cfg,
        data=data,
        model=model,
        lr_scheduler=lr,
        beta2_scheduler=beta2,
        run_dir=run_dir,
        ckpt=_resolve_ckpt(cfg.ckpt, run_dir, source),
    )
