"""What a model family declares about its Hugging Face layout (one `HFMapping` per layout)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class HFMapping:
    """One Hugging Face layout and the model families (`model_family(model_type)`) that use it.

    Parameter paths are those of our unrolled params tree. Kernels are (in, out) here and
    (out, in) in torch's Linear, so every `kernel` is transposed on the way; embeddings, norm
    weights and biases are copied as they are. A fused tensor (InternLM2's wqkv) is listed under
    one name when both sides order its rows the same way.
    """

    families: tuple[str, ...]  # our model families written in this layout
    architecture: str  # config.json "architectures"[0]
    hf_model_type: str  # config.json "model_type"
    top: Mapping[tuple[str, ...], str]  # path outside the layers -> full HF tensor name
    layer: Mapping[tuple[str, ...], str]  # module path below layers_i -> HF name below model.layers.{i}.
    bias_key: str  # config.json switch for the attention biases
    # The family's own config.json fields for ModelArgs `args`; raises CheckpointError for
    # settings the HF class cannot express.
    config_fields: Callable[[Any], dict]
    # tokenizer_config.json fields (tokenizer class, auto_map, ...) for a sentencepiece file.
    tokenizer_fields: Callable[[str], dict]
    # The model_type an imported folder gets, from whether its attention has biases.
    model_type_for: Callable[[bool], str]
    model_type_hint: str  # what to set model_type to for a folder of this layout (error messages)
    description: str  # how the list of readable architectures names this one
    bias_hint: str  # appended to errors about a missing or extra bias tensor
    # Logged (with the target folder) when an export copies no modeling code: None when
    # transformers ships the class.
    remote_code_note: str | None = None
