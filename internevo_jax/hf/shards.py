"""Sharded safetensors files as transformers writes and reads them (numpy only, no torch).

A model is `model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`
({"metadata": {"total_size": bytes}, "weight_map": {name: shard}}); a single `model.safetensors`
without an index is read too. Shards get the metadata {"format": "pt"} transformers expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from internevo_jax.checkpoint.errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def plan_shards(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Group tensors, in order, into shards of at most `max_bytes` (a bigger tensor gets its own shard)."""
    shards: list[list[str]] = []
    current, used = [], 0
    for name, nbytes in sizes:
        if current and used + nbytes > max_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += nbytes
    if current:
        shards.append(current)
    return shards


def write_sharded(
    folder: str,
    names: list[str],
    nbytes: Callable[[str], int],
    load: Callable[[str], np.ndarray],
    max_bytes: int,
) -> dict:
    """Write the tensors `names` (materialised one shard at a time by `load`) and the index.

    Returns the index dict. The folder must exist; the caller makes the whole export atomic.
    """
    shards = plan_shards([(n, nbytes(n)) for n in names], max_bytes)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        file_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: np.ascontiguousarray(load(name)) for name in shard}
        save_file(tensors, os.path.join(folder, file_name), metadata={"format": "pt"})
        for name, array in tensors.items():
            weight_map[name] = file_name
            total += array.nbytes
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    return index


def weight_map(folder: str) -> dict[str, str]:
    """{tensor name: shard file} of an HF folder; CheckpointError naming what is missing."""
    index_path = os.path.join(folder, INDEX_NAME)
    if os.path.exists(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                mapping = dict(json.load(f)["weight_map"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{index_path} is not a valid safetensors index ({err}). Restore it from the "
                "model's original download."
            ) from err
        missing = sorted({f for f in mapping.values() if not os.path.exists(os.path.join(folder, f))})
        if missing:
            raise CheckpointError(
                f"{folder} is incomplete: {INDEX_NAME} lists the shard {missing[0]}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, which is not in the folder. "
                "Download the missing shard(s) or re-run the export."
            )
        return mapping
    single = os.path.join(folder, SINGLE_NAME)
    if os.path.exists(single):
        with safe_open(single, framework="numpy") as f:
            return {name: SINGLE_NAME for name in f.keys()}
    others = sorted(n for n in os.listdir(folder) if n.endswith((".bin", ".pt", ".pth", ".safetensors")))
    found = f" It holds {', '.join(others[:3])}, which are not a safetensors model." if others else ""
    raise CheckpointError(
        f"{folder} has neither {INDEX_NAME} nor {SINGLE_NAME}.{found} Only safetensors weights are read: "
        "save the model with transformers' save_pretrained(..., safe_serialization=True) first."
    )


def read_tensors(folder: str, mapping: dict[str, str], names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, array) for `names`, opening each shard once (shards are memory-mapped)."""
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(mapping[name], []).append(name)
    for file_name, wanted in by_file.items():
        path = os.path.join(folder, file_name)
        try:
            with safe_open(path, framework="numpy") as f:
                for name in wanted:
                    yield name, f.get_tensor(name)
        except CheckpointError:
            raise
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise CheckpointError(
                f"{path} cannot be read ({err}); the file is truncated or corrupt. Download it again."
            ) from err
