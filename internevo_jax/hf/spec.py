"""What a model family declares about its Hugging Face layout (one `HFMapping` per layout)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.names import GELU, GELU_TANH, QKV_SEPARATE, SILU

# config.json's hidden_act for each of our MLP activations (a family's `activations` say what it reads).
HF_ACTIVATION = {SILU: "silu", GELU: "gelu", GELU_TANH: "gelu_pytorch_tanh"}

# What LLaMA-style HF classes hard-wire: the ModelArgs fields a class cannot switch, with their
# value there. A family's `fixed` starts from this and changes what its class does differently.
LLAMA_FIXED: Mapping[str, Any] = {
    "qk_norm": False,
    "norm_unit_offset": False,
    "embed_scale": False,
    "norm_head": False,
    "mlp_activation": SILU,
    "sliding_window": None,
}

# The fixed fields a config file can set, and the model key that sets them (embed_scale and
# sliding_window belong to the model type / their own keys).
FIXED_MODEL_KEYS = {
    "qk_norm": lambda v: {"qk_norm": v},
    "norm_unit_offset": lambda v: {"add_unit_offset": v},
    "norm_head": lambda v: {"norm_head": v},
    "mlp_activation": lambda v: {"use_swiglu": v == SILU},
}


def same_bias(
    key: str, architecture: str
) -> tuple[Callable[[Any], dict], Callable[[dict], tuple[bool, bool]]]:
    """(bias_fields, read_bias) for classes with one switch `key` for q/k/v and o biases alike."""

    def fields(args: Any) -> dict:
        if args.qkv_bias != args.out_bias:
            raise CheckpointError(
                f"HF's {architecture} has one {key} switch for q/k/v and o; this model has biases on only "
                "some of them (model.qkv_bias / model.o_bias), so it cannot be exported in this layout."
            )
        return {key: bool(args.qkv_bias)}

    def read(config: dict) -> tuple[bool, bool]:
        bias = bool(config.get(key, False))
        return bias, bias

    return fields, read


# The component of a layer mapping entry that stands for one expert of an MoE layer; its HF name
# holds "{e}" (hf/tensors.py fills in the expert's number).
EXPERT = "expert_{e}"


@dataclasses.dataclass(frozen=True)
class MoELayout:
    """What an HF mixture-of-experts class stores in config.json besides the dense fields.

    Every layer is an MoE layer here (no dense layers in between): softmax router, top-k experts,
    and an optional shared expert added through a sigmoid gate (Qwen2-MoE).
    """

    # config.json keys of the number of routed experts: the first is written, any is read.
    experts_keys: tuple[str, ...]
    expert_size_key: str  # config.json key of one expert's hidden size
    # config.json key of "divide the top-k weights by their sum"; None: the class always does.
    norm_topk_key: str | None
    # config.json key of the shared expert's hidden size; None: the class has no shared expert
    # (when set, the class always has one, added as sigmoid(x @ shared_expert_gate) * shared(x)).
    shared_size_key: str | None = None
    # Fields the class reads that have one value here (every layer MoE, no router noise).
    fixed_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class HFMapping:
    """One Hugging Face layout and the model families (`model_family(model_type)`) that use it.

    Parameter paths are those of our unrolled params tree in this layout's q/k/v storage and
    rotate-half lane order (hf/relayout.py converts the model's own). Kernels are (in, out) here and
    (out, in) in torch's Linear, so every `kernel` is transposed on the way; embeddings, norm
    weights and biases are copied as they are.
    """

    families: tuple[str, ...]  # our model families written in this layout
    architecture: str  # config.json "architectures"[0]
    hf_model_type: str  # config.json "model_type"
    top: Mapping[tuple[str, ...], str]  # path outside the layers -> full HF tensor name
    layer: Mapping[tuple[str, ...], str]  # module path below layers_i -> HF name below model.layers.{i}.
    # config.json bias switches for the model's (qkv_bias, out_bias), raising CheckpointError for a
    # combination the class cannot express; and the (qkv_bias, out_bias) a config.json describes.
    bias_fields: Callable[[Any], dict]
    read_bias: Callable[[dict], tuple[bool, bool]]
    # tokenizer_config.json fields (tokenizer class, auto_map, ...) for a sentencepiece file.
    tokenizer_fields: Callable[[str], dict]
    # The model_type an imported config.json gets (its biases may decide, as for LLaMA).
    model_type_for: Callable[[dict], str]
    model_type_hint: str  # what to set model_type to for a folder of this layout (error messages)
    description: str  # how the list of readable architectures names this one
    bias_hint: str  # appended to errors about a missing or extra bias tensor
    qkv_layout: str = QKV_SEPARATE  # how the class stores q/k/v (names.QKV_LAYOUTS)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(LLAMA_FIXED))
    # config.json's hidden_act values the class reads as its activation.
    activations: tuple[str, ...] = ("silu",)
    tie_default: bool = False  # the class's tie_word_embeddings when config.json leaves it out
    # The family's own config.json fields for ModelArgs `args` (auto_map, sliding window, ...),
    # and the model keys of our config it reads back from a config.json.
    extra_config: Callable[[Any], dict] = lambda args: {}
    extra_model: Callable[[dict, str], dict] = lambda config, source: {}
    # Logged (with the target folder) when an export copies no modeling code: None when
    # transformers ships the class.
    remote_code_note: str | None = None
    # Mixture-of-experts classes: their config.json fields (hf/config_json.py). Their layer names
    # then hold ("feed_forward", "gate") (the router, stored [E, H]) and per-expert modules keyed
    # with the component "expert_{e}" whose HF name holds "{e}" (hf/relayout.py splits our stacked
    # [E, ...] expert arrays into one tensor per expert).
    moe: MoELayout | None = None
