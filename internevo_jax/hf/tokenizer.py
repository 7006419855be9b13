"""Put a sentencepiece tokenizer next to exported weights: tokenizer.model, tokenizer_config.json
and special_tokens_map.json, in the layout the HF tokenizer classes read."""

from __future__ import annotations

import json
import os
import shutil

from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.hf.spec import HFMapping


def _piece(sp, index: int) -> str | None:
    return sp.id_to_piece(index) if 0 <= index < sp.get_piece_size() else None


def _missing(tokenizer_path: str) -> CheckpointError:
    return CheckpointError(
        f"--tokenizer {tokenizer_path} does not exist. Pass the sentencepiece .model file "
        "(e.g. tokenizer_internlm2.model)."
    )


def _load(tokenizer_path: str):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=tokenizer_path)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(
            f"{tokenizer_path} cannot be read as a sentencepiece model ({err}). Pass the "
            ".model file of the tokenizer the model was trained with."
        ) from err


def piece_count(tokenizer_path: str) -> int:
    """The number of pieces (token ids) of a sentencepiece model."""
    if not os.path.isfile(tokenizer_path):
        raise _missing(tokenizer_path)
    return _load(tokenizer_path).get_piece_size()


def special_tokens(tokenizer_path: str) -> dict:
    """The bos/eos/unk/pad pieces and ids of a sentencepiece model."""
    sp = _load(tokenizer_path)
    out = {}
    for role, index in (
        ("bos", sp.bos_id()),
        ("eos", sp.eos_id()),
        ("unk", sp.unk_id()),
        ("pad", sp.pad_id()),
    ):
        piece = _piece(sp, index)
        if piece is not None:
            out[role] = (piece, index)
    return out


def adds_dummy_prefix(tokenizer_path: str) -> bool | None:
    """The model's normalizer add_dummy_prefix flag (False for the InternLM tokenizers); None if unknown."""
    try:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        with open(tokenizer_path, "rb") as f:
            proto.ParseFromString(f.read())
        return bool(proto.normalizer_spec.add_dummy_prefix)
    except Exception:  # protobuf missing or an unusual file: leave the HF default
        return None


def write_tokenizer(tokenizer_path: str, folder: str, mapping: HFMapping) -> dict[str, int]:
    """Copy the tokenizer into `folder` with `mapping`'s tokenizer class.

    Returns {bos_token_id, eos_token_id, pad_token_id} for config.json.
    """
    if not os.path.isfile(tokenizer_path):
        raise _missing(tokenizer_path)
    tokens = special_tokens(tokenizer_path)
    shutil.copyfile(tokenizer_path, os.path.join(folder, "tokenizer.model"))
    names = {f"{role}_token": piece for role, (piece, _) in tokens.items()}
    if "pad_token" not in names and "eos_token" in names:
        names["pad_token"] = names["eos_token"]  # batched generation needs a pad token
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        **names,
    }
    config.update(mapping.tokenizer_fields(tokenizer_path))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(names, f, indent=2)
        f.write("\n")
    ids = {f"{role}_token_id": index for role, (_, index) in tokens.items() if role in ("bos", "eos", "pad")}
    ids.setdefault("pad_token_id", ids.get("eos_token_id"))
    return {k: v for k, v in ids.items() if v is not None}
