"""Alpaca-style instruction data -> InternEvo's SFT `.bin` files (the logic of tools/alpaca_tokenizer.py).

A record `{"instruction", "input", "output"}` becomes one sample, InternLM's chat format:

    [bos] + -( ids("<|User|>:{instruction}\\n{input}") + [eoh, 13] ) + -ids("<|Bot|>:")
          + ids(output) + [eoa, 13]

cut to 2047 tokens, then [eos]. Prompt tokens are stored negated: packing feeds abs(id) as input and
never uses them as targets, so only the answer (and eos) is learned. Without an input the user turn is
"<|User|>:{instruction}". eoh / eoa are 103167 / 103166 for the InternLM tokenizer; 13 is its "\\n"
byte token.

The train/valid split is InternEvo's: `np.random.seed(0)` then `choice(n, int(n * split_ratio))`
(with replacement, so the validation set can be a little smaller than the ratio); chosen records go
to valid/en/dataset.bin, the rest to train/en/dataset.bin, in input order, metas in int64.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from internevo_jax.data.binmeta import BinWriter
from internevo_jax.data.errors import DataError
from internevo_jax.data.tokenizer import Tokenizer

EOH_ID = 103167  # InternLM's end-of-human token, as InternEvo's alpaca tool uses it
EOA_ID = 103166  # end-of-assistant
NEWLINE_ID = 13  # "<0x0A>", the newline byte token
MAX_TOKENS = 2047  # cut before the final eos, as InternEvo
USER_PREFIX, BOT_PREFIX = "<|User|>:", "<|Bot|>:"
REQUIRED_FIELDS = ("instruction", "output")  # "input" may be absent (read as "")

_FORMAT_HINT = (
    'The input must be a JSON list of {"instruction": ..., "input": ..., "output": ...} records '
    "(Stanford Alpaca's alpaca_data.json), or a .jsonl file with one such record per line."
)


def read_alpaca_records(path: str | os.PathLike) -> list[dict]:
    """The records of an alpaca `.json` list (or `.jsonl`), checked; DataError names the file and record."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"The alpaca data file {path} does not exist (or is not a file).")
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                records = []
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        records.append(_parse_line(path, lineno, line))
            else:
                records = json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid UTF-8 ({e.reason} at byte {e.start}). Convert it to UTF-8."
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg}). {_FORMAT_HINT}"
        ) from None
    if not isinstance(records, list):
        raise DataError(f"{path} holds a JSON {type(records).__name__}, not a list. {_FORMAT_HINT}")
    for i, record in enumerate(records):
        _check_record(path, i, record)
    if not records:
        raise DataError(f"{path} holds no records, so nothing was written. {_FORMAT_HINT}")
    return records


def _parse_line(path: str, lineno: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}, line {lineno} column {e.colno}: not valid JSON ({e.msg}). {_FORMAT_HINT}"
        ) from None


def _check_record(path: str, index: int, record) -> None:
    where = f"{path}, record {index + 1}"
    if not isinstance(record, dict):
        raise DataError(f"{where} is a JSON {type(record).__name__}, not an object. {_FORMAT_HINT}")
    for key in REQUIRED_FIELDS:
        if key not in record:
            raise DataError(
                f"{where} has no {key!r} field (it has {sorted(record)}). Every record needs 'instruction' "
                f"and 'output'; 'input' may be empty or absent."
            )
    for key in ("instruction", "input", "output"):
        if key in record and not isinstance(record[key], str):
            raise DataError(
                f"{where}: field {key!r} is a JSON {type(record[key]).__name__}, expected a string."
            )


def user_text(record: dict) -> str:
    """The user turn of a record, InternEvo's format."""
    instruction, inp = record["instruction"], record.get("input", "")
    return f"{USER_PREFIX}{instruction}\n{inp}" if inp != "" else f"{USER_PREFIX}{instruction}"


class AlpacaEncoder:
    """Turns records into sample token lists (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        eoh_id: int = EOH_ID,
        eoa_id: int = EOA_ID,
        newline_id: int = NEWLINE_ID,
        max_tokens: int = MAX_TOKENS,
    ):
        for name, value in (("eoh_id", eoh_id), ("eoa_id", eoa_id), ("newline_id", newline_id)):
            if not 0 <= value < tokenizer.vocab_size:
                raise DataError(
                    f"{name}={value} is outside the vocabulary of {tokenizer.path} ({tokenizer.vocab_size} "
                    f"tokens). The defaults (eoh {EOH_ID}, eoa {EOA_ID}) are the InternLM tokenizer's; for "
                    f"another tokenizer pass its ids with --eoh_id / --eoa_id."
                )
        self.tok = tokenizer
        self.eoh_id, self.eoa_id, self.newline_id = int(eoh_id), int(eoa_id), int(newline_id)
        self.max_tokens = int(max_tokens)
        self._bot_ids = tokenizer.sp.encode(BOT_PREFIX)

    def encode(self, records: list[dict]) -> list[list[int]]:
        """Token lists of `records`, in order."""
        sp = self.tok.sp
        users = sp.encode([user_text(r) for r in records])
        answers = sp.encode([r["output"] for r in records])
        out = []
        for user, answer in zip(users, answers):
            prompt = [*user, self.eoh_id, self.newline_id, *self._bot_ids]
            ids = [self.tok.bos_id, *(-t for t in prompt), *answer, self.eoa_id, self.newline_id]
            out.append([*ids[: self.max_tokens], self.tok.eos_id])
        return out


def valid_indices(num_records: int, split_ratio: float) -> set[int]:
    """The records InternEvo's split sends to validation (seed 0, drawn with replacement)."""
    if not 0.0 <= split_ratio < 1.0:
        raise DataError(
            f"--split_ratio {split_ratio} must be in [0, 1): the share of records kept for validation."
        )
    count = int(num_records * split_ratio)
    return set(np.random.RandomState(0).choice(num_records, count).tolist()) if count else set()


@dataclass
class AlpacaStats:
    """What tokenize_alpaca wrote."""

    train_path: str
    valid_path: str
    train_samples: int = 0
    train_tokens: int = 0
    valid_samples: int = 0
    valid_tokens: int = 0


def tokenize_alpaca(
    dataset_path: str | os.PathLike,
    output_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    *,
    split_ratio: float = 0.1,
    eoh_id: int = EOH_ID,
    eoa_id: int = EOA_ID,
    batch_size: int = 1024,
) -> AlpacaStats:
    """Write OUT/train/en/dataset.bin and OUT/valid/en/dataset.bin (+ int64 .meta) from alpaca records."""
    if not os.path.isfile(tokenizer_path):
        raise DataError(
            f"The tokenizer model {tokenizer_path} does not exist; pass the sentencepiece model the model was "
            f"trained with (for InternLM its tokenizer.model) as the TOKENIZER argument."
        )
    records = read_alpaca_records(dataset_path)
    chosen = valid_indices(len(records), split_ratio)
    encoder = AlpacaEncoder(Tokenizer(tokenizer_path), eoh_id=eoh_id, eoa_id=eoa_id)
    out = Path(output_path)
    train = BinWriter(out / "train" / "en" / "dataset.bin", meta_dtype=np.int64)
    valid = BinWriter(out / "valid" / "en" / "dataset.bin", meta_dtype=np.int64)
    try:
        for start in range(0, len(records), batch_size):
            for i, tokens in enumerate(encoder.encode(records[start : start + batch_size]), start):
                (valid if i in chosen else train).write(tokens)
        stats = AlpacaStats(
            str(train.bin_path), str(valid.bin_path), train.num_samples, train.num_tokens,
            valid.num_samples, valid.num_tokens,
        )  # fmt: skip
        train.close()
        valid.close()
    except BaseException:
        train.abort()
        valid.abort()
        raise
    return stats
