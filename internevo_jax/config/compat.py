"""InternEvo config forms that need rewriting before the typed sections are built.

* ``parallel``: the old form (``zero1=8, tensor=1, sequence_parallel=...``) and partial new forms
  become the full new form.
* ``float("inf")`` for ``ckpt.checkpoint_every`` / ``ckpt.oss_snapshot_freq`` (InternEvo's way to
  say "never") becomes None.
* Keys that only steer PyTorch/CUDA machinery are listed so the loader can report them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from internevo_jax.names import UNSUPPORTED_MODEL_TYPES, unsupported_model_message

from .errors import ConfigError
from .schema import TENSOR_MODES

# Dotted keys accepted for compatibility that change nothing in JAX. A key also covers its sub-keys.
NO_EFFECT_KEYS = frozenset(
    {
        # top level
        "cudnn_benchmark",
        "cudnn_deterministic",
        "use_apex_adam",
        "alert_address",
        "batch_count",
        # keeping attention outputs across recomputation saves time, never changes a result:
        # here the layers named by model.checkpoint are recomputed in full
        "selective_checkpoint",
        "selective_checkpoint_offload",
        "fsdp_wrap_cls",
        "int8_training",  # False only: True is refused (validate.py)
        "int8_mode",
        "parallel.fsdp",  # enable=True becomes parallel.zero1.fsdp=True (normalize_parallel)
        "parallel.pipeline.decouple_grad",
        "data.unit_schedule_size",
        "grad_profiling",
        "metric_dtype",
        # generation: InternEvo's dataset mode (prompts from a folder, outputs to .bin files);
        # num_beams 1 only (more is refused)
        "generation.output_folder",
        "generation.data_folder",
        "generation.num_beams",
        "tensorboard",  # a top-level dict some configs carry; monitor.tensorboard is the one read
        # data
        "data.packed_length",  # always seq_len * micro_bsz, as in InternEvo
        "data.batch_size",  # always micro_num
        "data.empty_cache_and_diag_interval",
        "data.diag_outlier_ratio",
        "data.use_shm",
        "data.shm_path",
        # model
        "model.embed_split_hidden",
        "model.parallel_output",
        "model.dropout_selective_checkpoint",
        "model.mlp_layer_fusion",
        # parallel
        "parallel.pipeline.interleaved_overlap",
        "parallel.pipeline.mode",  # "1F1B" only: the zero-bubble modes are refused
        "parallel.pipeline.use_zeropp",  # False only
        "parallel.pipeline.zero_bubble",  # False only
        "parallel.weight.overlap",
        "parallel.weight.memory_pool",
        "parallel.weight.launch_allgather_before",
        "parallel.weight.forward_overlap_per",
        "parallel.tensor.enable_vit",
        "parallel.expert_zero1",  # expert parameters follow zero1 like every other parameter
        "parallel.expert_weight.overlap",
        "parallel.expert_weight.memory_pool",
        "parallel.expert_weight.launch_allgather_before",
        "parallel.expert_weight.forward_overlap_per",
        "parallel.sequence_2D",  # enable=False only: 2D sequence parallelism is refused
        "parallel.gqa",
        # optimizer / schedules / loss
        "hybrid_zero_optimizer.overlap_sync_grad",
        "hybrid_zero_optimizer.overlap_sync_param",
        "hybrid_zero_optimizer.reduce_bucket_size",
        "hybrid_zero_optimizer.zero_overlap_communication",
        "hybrid_zero_optimizer.use_split_tensor_optim",
        "hybrid_zero_optimizer.all_gather_size",
        "lr_scheduler.last_epoch",
        "beta2_scheduler.cur_iter",
        "loss.op_type",
        # checkpoint
        "ckpt.universal_ckpt",
    }
)


def refuse_foreign_models(raw: dict[str, Any], source: str) -> None:
    """Refuse a config whose model this project cannot build at all, before its keys are checked:
    their own keys (a multimodal model's data_yaml, the HF wrapper's fsdp dict) would otherwise
    be reported as unknown, which hides the real reason."""
    model_type = raw.get("model_type")
    if isinstance(model_type, str) and model_type in UNSUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{source}: {unsupported_model_message(model_type)}",
            key="model_type",
            source=source,
        )
    if "hf" in raw:
        raise ConfigError(
            f"{source}: 'hf' names a Hugging Face PyTorch module to train as it is (InternEvo's HF model "
            "wrapper). This project trains its own JAX models: remove `hf` and `fsdp_wrap_cls`, set "
            'model_type to the family (e.g. "INTERNLM2") with its sizes in `model`, and load the HF '
            'weights with ckpt.load_ckpt_info=dict(path=HF_FOLDER, content=("model",), ckpt_type="hf").',
            key="hf",
            source=source,
        )


def present_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key present in a raw (nested) dict, parents before children."""
    out = []
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        out.append(dotted)
        if isinstance(value, dict):
            out.extend(present_keys(value, dotted + "."))
    return out


def no_effect_keys(dotted_keys: Iterable[str]) -> list[str]:
    """The given keys that have no effect in JAX, once each, covered sub-keys folded in."""
    found: list[str] = []
    for key in dotted_keys:
        parts = key.split(".")
        covered = any(".".join(parts[:i]) in NO_EFFECT_KEYS for i in range(1, len(parts)))
        if key in NO_EFFECT_KEYS and not covered and key not in found:
            found.append(key)
    return found


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_section(value: Any, int_key: str, defaults: dict[str, Any], dotted: str, source: str) -> dict:
    """None -> defaults; an int -> defaults with ``int_key`` set; a dict -> defaults updated."""
    if value is None:
        return dict(defaults)
    if _is_int(value):
        return {**defaults, int_key: value}
    if isinstance(value, dict):
        return {**defaults, **value}
    raise ConfigError(
        f"{source}: 'parallel.{dotted}' must be an integer size or a dict like "
        f"{dotted}=dict(size=...), got {value!r} ({type(value).__name__}).",
        key=f"parallel.{dotted}",
        source=source,
    )


def normalize_parallel(
    raw: Any, source: str, log: Callable[[str], None], *, final: bool = True
) -> dict[str, Any]:
    """Rewrite a ``parallel`` dict in either InternEvo form into the full new form.

    Idempotent, so it runs once before ``--set`` overrides (so ``parallel.zero1.size`` exists for
    an old-form ``zero1=8``) and again after them with ``final=True``, which derives
    ``sequence_parallel`` from the tensor mode. An integer ``tensor`` (old form) becomes mode
    "fsp" when ``sequence_parallel=True``: before tensor modes existed, that flag switched on
    flash-attn's sequence-parallel linear layers, which InternEvo now calls "fsp".
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: 'parallel' must be a dict, e.g. parallel=dict(zero1=dict(size=-1), "
            f'tensor=dict(size=1, mode="mtp")), got {raw!r} ({type(raw).__name__}).',
            key="parallel",
            source=source,
        )
    out = dict(raw)
    seq = out.get("sequence_parallel", False)
    if not isinstance(seq, bool):
        raise ConfigError(
            f"{source}: 'parallel.sequence_parallel' must be True or False, got {seq!r}. "
            f'Better: choose parallel.tensor.mode ("msp"/"fsp"/"isp" are sequence parallel).',
            key="parallel.sequence_parallel",
            source=source,
        )
    out["zero1"] = _as_section(out.get("zero1"), "size", {"size": -1, "fsdp": False}, "zero1", source)
    torch_fsdp = out.pop("fsdp", None)
    if isinstance(torch_fsdp, dict) and torch_fsdp.get("enable"):
        # InternEvo's fsdp=dict(enable=True, ...) shards the weights over the zero1 group, which is
        # zero1.fsdp here; its mode and init_method steer PyTorch only.
        out["zero1"] = {**out["zero1"], "fsdp": True}
    out["pipeline"] = _as_section(
        out.get("pipeline"),
        "size",
        {"size": 1, "interleaved_overlap": False, "mode": "1F1B"},
        "pipeline",
        source,
    )
    old_tensor = _is_int(out.get("tensor"))
    tensor = _as_section(out.get("tensor"), "size", {"size": 1, "mode": None}, "tensor", source)
    if tensor["mode"] is None:
        tensor["mode"] = "fsp" if (old_tensor and seq) else "mtp"
    if isinstance(tensor["mode"], str):
        tensor["mode"] = tensor["mode"].lower()
        if tensor["mode"] not in TENSOR_MODES:
            raise ConfigError(
                f"{source}: 'parallel.tensor.mode' is {tensor['mode']!r}; it must be one of "
                f"{', '.join(TENSOR_MODES)} (mtp: Megatron tensor parallel; msp/fsp: plus sequence "
                f"parallel; isp: InternEvo's intern sequence parallel).",
                key="parallel.tensor.mode",
                source=source,
            )
        derived = tensor["mode"] in ("msp", "fsp", "isp")
        if not final:
            derived = seq
        elif seq and not derived:
            # InternEvo drops the flag for mode "mtp" too; say so instead of ignoring it quietly.
            log(
                f"{source}: parallel.sequence_parallel=True is ignored because parallel.tensor.mode "
                f'is "mtp" (as in InternEvo); use mode "msp" or "fsp" for sequence parallelism.'
            )
        out["sequence_parallel"] = derived
    out["tensor"] = tensor
    out["weight"] = _as_section(
        out.get("weight"), "size", {"size": 1, "overlap": False, "memory_pool": False}, "weight", source
    )
    for name in ("expert", "expert_weight"):
        if _is_int(out.get(name)):
            out[name] = {"size": out[name]}
    pipeline_mode = out["pipeline"].get("mode")
    if isinstance(pipeline_mode, str):
        out["pipeline"]["mode"] = pipeline_mode.upper()
    return out


def infinite_to_none(section: Any, keys: Iterable[str]) -> Any:
    """Replace float('inf') (InternEvo's "never") with None for the given keys of a raw dict."""
    if not isinstance(section, dict):
        return section
    out = dict(section)
    for key in keys:
        value = out.get(key)
        if isinstance(value, float) and math.isinf(value) and value > 0:
            out[key] = None
    return out
