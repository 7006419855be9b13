"""config.json <-> our model settings. The fields every supported layout shares are here; each
family's own fields come from its `HFMapping`."""

from __future__ import annotations

import json
import os
from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.registry import mapping_for, mapping_of_config
from internevo_jax.hf.spec import FIXED_MODEL_KEYS, HF_ACTIVATION
from internevo_jax.model.moe.settings import DROPLESS
from internevo_jax.model.registry import model_family
from internevo_jax.names import round_mlp_hidden_size

TORCH_DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def _moe_config(args: Any, mapping: Any, aux_loss_coef: float | None) -> tuple[dict, list[str]]:
    """(config.json's mixture-of-experts fields, what the class cannot express) for ModelArgs `args`.

    Both routings export: GShard and Dropless hold the same weights and HF runs dropless top-k, so a
    GShard model computes what the HF class computes wherever no token was over an expert's capacity.
    """
    layout, arch, moe = mapping.moe, mapping.architecture, args.moe
    if layout is None:
        return {}, (["mixture-of-experts layers (model.num_experts > 1)"] if moe is not None else [])
    if moe is None:
        return {}, [f"dense MLPs (model.num_experts < 2; HF's {arch} is a mixture of experts)"]
    problems = []
    dropless = moe.routing == DROPLESS
    # GShard always divides the kept top-k softmax scores by their sum.
    normalized = moe.normalize_weights if dropless else True
    if dropless and moe.scoring_func != "softmax":
        problems.append(
            f"model.moe_layer_kwargs.scoring_func={moe.scoring_func!r} (HF's {arch} routes by softmax scores)"
        )
    if dropless and moe.routed_scaling_factor != 1.0:
        problems.append(
            f"model.moe_layer_kwargs.routed_scaling_factor={moe.routed_scaling_factor} (HF's {arch} does not "
            "scale the routing weights)"
        )
    if layout.norm_topk_key is None and not normalized:
        problems.append(
            f"model.moe_layer_kwargs.normalize_expert_weights=False (HF's {arch} always divides the top-k "
            "weights by their sum)"
        )
    if layout.shared_size_key is None and moe.num_shared_experts:
        problems.append(
            f"model.num_shared_experts={moe.num_shared_experts} (HF's {arch} has no shared experts)"
        )
    if layout.shared_size_key is not None and not moe.num_shared_experts:
        problems.append(
            f"model.num_shared_experts=0 (HF's {arch} always adds a shared expert: set num_shared_experts >= 1)"
        )
    if layout.shared_size_key is not None and moe.num_shared_experts and moe.shared_mix != "sigmoid":
        problems.append(
            f"shared experts mixed by {moe.shared_mix} (HF's {arch} adds them through a sigmoid gate)"
        )
    fields = {
        layout.experts_keys[0]: moe.num_experts,
        "num_experts_per_tok": moe.top_k,
        layout.expert_size_key: moe.expert_hidden_size,
        **({layout.norm_topk_key: normalized} if layout.norm_topk_key else {}),
        **({layout.shared_size_key: moe.shared_hidden_size} if layout.shared_size_key else {}),
        **{k: (list(v) if isinstance(v, list) else v) for k, v in layout.fixed_fields.items()},
        "output_router_logits": False,
    }
    if aux_loss_coef is not None:
        fields["router_aux_loss_coef"] = float(aux_loss_coef)
    return fields, problems


def hf_config(
    args: Any,
    family: str,
    *,
    dtype: str,
    special_ids: dict[str, int] | None = None,
    aux_loss_coef: float | None = None,
) -> dict:
    """config.json for a model with ModelArgs `args` exported in `family`'s HF layout.

    Refuses what the HF class cannot express: post-norm blocks without a final norm, LayerNorm, a
    setting the class hard-wires otherwise (its `fixed` fields), biases it has no switch for and
    mixture-of-experts settings it does not have. `aux_loss_coef` (loss.moe_loss_coeff) becomes an
    MoE class's router_aux_loss_coef.
    """
    mapping = mapping_for(family)
    moe_fields, problems = _moe_config(args, mapping, aux_loss_coef)
    if args.post_norm or not args.final_norm:
        problems.append(f"apply_post_layer_norm=True (HF's {mapping.architecture} is pre-norm)")
    if args.norm_type != "rmsnorm":
        problems.append(f"norm_type={args.norm_type!r} (HF's {mapping.architecture} uses RMSNorm)")
    for field, value in mapping.fixed.items():
        if getattr(args, field) != value:
            problems.append(f"{field}={getattr(args, field)!r} (HF's {mapping.architecture} has {value!r})")
    if problems:
        raise CheckpointError(
            f"This {family} model cannot be written as a Hugging Face {mapping.architecture}: it uses "
            f"{'; '.join(problems)}. Only models with the HF architecture's structure can be exported."
        )
    ids = {"bos_token_id": 1, "eos_token_id": 2, **(special_ids or {})}
    rope_scaling = None
    if args.dynamic_ntk:
        # InternEvo trains with factor 1.0; HF's dynamic NTK with factor 1 is the same formula.
        rope_scaling = {"type": "dynamic", "rope_type": "dynamic", "factor": float(args.rope_scaling_factor)}
    return {
        "architectures": [mapping.architecture],
        "model_type": mapping.hf_model_type,
        **mapping.extra_config(args),
        **mapping.bias_fields(args),
        "vocab_size": args.vocab_size,
        "hidden_size": args.hidden_size,
        "intermediate_size": args.mlp_hidden_size,
        "num_hidden_layers": args.num_layers,
        "num_attention_heads": args.num_heads,
        "num_key_value_heads": args.num_kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": HF_ACTIVATION[args.mlp_activation],
        "max_position_embeddings": args.max_position_embeddings,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_base,
        "rope_scaling": rope_scaling,
        "initializer_range": 0.02,
        "tie_word_embeddings": bool(args.tie_embeddings),
        "use_cache": True,
        "pretraining_tp": 1,
        "torch_dtype": TORCH_DTYPES[dtype],
        **moe_fields,
        **ids,
    }


def read_hf_config(folder: str) -> dict:
    """The parsed config.json of an HF model folder; CheckpointError naming the file when unusable."""
    path = os.path.join(folder, "config.json")
    if not os.path.isdir(folder):
        raise CheckpointError(
            f"{folder} is not a folder. Point the path at a Hugging Face model folder "
            "(the one holding config.json and *.safetensors)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} does not exist: {folder} is not a Hugging Face model folder. Point the "
            "path at the folder holding config.json and the *.safetensors files."
        ) from None
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} cannot be read as JSON ({err}). Restore the file from the model's original download."
        ) from err


def rope_settings(config: dict) -> tuple[float, dict | None]:
    """(rope_theta, rope scaling dict or None) from either transformers 4 or 5 key names."""
    params = config.get("rope_parameters") or {}
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling")
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    return float(theta), scaling


def _mlp_ratio(hidden: int, intermediate: int) -> tuple[float, int]:
    """(mlp_ratio, multiple_of) for which InternEvo's rounding gives exactly `intermediate`."""
    ratio = intermediate / hidden
    for multiple in (256, 128, 64, 32, 16, 8, 1):
        if round_mlp_hidden_size(hidden, ratio, multiple) == intermediate:
            return ratio, multiple
    return (intermediate + 0.5) / hidden, 1  # int() of this lands on `intermediate` exactly


_REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
# config.json keys that make some layers dense in HF MoE classes, and the value meaning "none".
_DENSE_LAYER_KEYS = {
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "first_k_dense_replace": 0,
    "moe_layer_freq": 1,
}


def _moe_model(config: dict, source: str, mapping: Any, expert_size: int) -> tuple[dict, list[str]]:
    """(our MoE model keys, what cannot be represented) for an MoE class's config.json."""
    layout = mapping.moe
    problems = []
    for key, none in _DENSE_LAYER_KEYS.items():
        value = config.get(key)
        if value is not None and value != none:
            problems.append(
                f"{key}={value!r} (dense MLPs in some layers; here every layer is mixture-of-experts, "
                f"which is {key}={none!r})"
            )
    experts = next((config[k] for k in layout.experts_keys if config.get(k) is not None), None)
    top_k = config.get("num_experts_per_tok")
    if not isinstance(experts, int) or experts < 2:
        problems.append(
            f"{layout.experts_keys[0]}={experts!r} (a mixture of experts needs at least 2 experts)"
        )
    if not isinstance(top_k, int) or not isinstance(experts, int) or not 1 <= top_k <= experts:
        problems.append(f"num_experts_per_tok={top_k!r} (between 1 and the number of experts)")
    normalized = bool(config.get(layout.norm_topk_key, False)) if layout.norm_topk_key else True
    model = dict(
        num_experts=experts,
        top_k=top_k,
        moe_type=DROPLESS,
        moe_layer_kwargs={"normalize_expert_weights": normalized},
        num_shared_experts=0,
    )
    if layout.shared_size_key is not None:
        shared = config.get(layout.shared_size_key)
        if not isinstance(shared, int) or shared <= 0 or shared % expert_size:
            problems.append(
                f"{layout.shared_size_key}={shared!r} with {layout.expert_size_key}={expert_size} (shared "
                f"experts here are num_shared_experts copies of one expert's width: the shared size must be "
                "a positive multiple of the expert size)"
            )
        else:
            model["num_shared_experts"] = shared // expert_size
    return model, problems


def model_settings(config: dict, source: str, model_type: str | None = None) -> tuple[str, dict, list[str]]:
    """(model_type, `model` dict of our config keys, warnings) that reproduce an HF config.json."""
    mapping = mapping_of_config(config, source)
    required = [
        mapping.moe.expert_size_key if k == "intermediate_size" and mapping.moe else k for k in _REQUIRED
    ]
    for key in required:
        if not isinstance(config.get(key), int):
            raise CheckpointError(
                f"{source}/config.json has no {key!r} (or it is not a whole number): a {mapping.architecture} "
                f"config.json states {', '.join(required)}. Restore the file from the model's download."
            )
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    size_key = mapping.moe.expert_size_key if mapping.moe else "intermediate_size"
    mlp_size = int(config[size_key])
    problems, warnings = [], []
    moe_model = {}
    if mapping.moe is not None:
        moe_model, problems = _moe_model(config, source, mapping, mlp_size)
    act = config.get("hidden_act", mapping.activations[0])
    if act not in mapping.activations:
        problems.append(
            f"hidden_act={act!r} ({mapping.architecture} here reads {' or '.join(mapping.activations)})"
        )
    if config.get("mlp_bias"):
        problems.append("mlp_bias=true (the MLP has no biases here)")
    theta, scaling = rope_settings(config)
    dynamic = False
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "dynamic":
            problems.append(f"rope scaling {kind!r} (only dynamic NTK is implemented)")
        dynamic = True
        if float(scaling.get("factor", 1.0)) != 1.0:
            warnings.append(
                f"{source}/config.json asks for dynamic NTK RoPE with factor {scaling.get('factor')}; InternEvo's "
                "dynamic NTK (and this trainer's) uses factor 1.0. The two agree up to max_position_embeddings "
                f"({config.get('max_position_embeddings')}) and differ beyond it."
            )
    if problems:
        raise CheckpointError(
            f"{source}/config.json uses {'; '.join(problems)}, which this converter cannot "
            "represent. Use a checkpoint without these features."
        )
    chosen = mapping.model_type_for(config)
    if model_type:
        if mapping_for(model_family(model_type)) is not mapping:
            raise CheckpointError(
                f"{source} holds a {mapping.architecture} model, which cannot be read as model_type "
                f"{model_type!r}. Use {mapping.model_type_hint} (or leave --model_type out)."
            )
        chosen = model_type
    qkv_bias, o_bias = mapping.read_bias(config)
    ratio, multiple = _mlp_ratio(hidden, mlp_size)
    model = dict(
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_attention_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        vocab_size=int(config["vocab_size"]),
        mlp_ratio=ratio,
        multiple_of=multiple,
        no_bias=not (qkv_bias or o_bias),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        norm_type="rmsnorm",
        layer_norm_epsilon=float(config.get("rms_norm_eps", 1e-6)),
        rope_base=theta,
        use_dynamic_ntk_rope=dynamic,
        max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
        apply_post_layer_norm=False,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", mapping.tie_default)),
    )
    for field, value in mapping.fixed.items():
        model.update(FIXED_MODEL_KEYS.get(field, lambda v: {})(value))
    model.update(mapping.extra_model(config, source))
    model.update(moe_model)
    return chosen, model, warnings
