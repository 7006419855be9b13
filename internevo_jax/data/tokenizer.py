"""The sentencepiece tokenizer as InternEvo's data uses it: a text becomes `[bos] + ids + [eos]`.

Streaming training encodes with it on the fly; the offline tools (internevo_jax/preprocess) write
`.bin` files with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from internevo_jax.data.errors import DataError

TOKENIZER_FILENAME = "tokenizer_internlm.model"  # InternEvo's default name, next to tools/tokenizer.py


def sentencepiece_path(path: str | os.PathLike) -> str | None:
    """The sentencepiece model `path` names: the file itself, or in a folder (a Hugging Face model
    folder, as InternEvo passes) its tokenizer.model, else its only *.model file; None when there is
    none (a missing path, or a folder without one)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        return None
    candidate = os.path.join(path, "tokenizer.model")
    if os.path.isfile(candidate):
        return candidate
    models = sorted(f for f in os.listdir(path) if f.endswith(".model"))
    return os.path.join(path, models[0]) if len(models) == 1 else None


def vocab_mismatch(pieces: int, vocab_size: int, *, exact: bool = False) -> str | None:
    """How a tokenizer of `pieces` pieces fails to fit a model of `vocab_size` token ids, as the end
    of a sentence that starts with the tokenizer's name; None when it fits.

    More pieces than ids never fit: the tokenizer's larger ids fall outside the embedding table.
    With `exact`, fewer pieces do not fit either (most likely another model's tokenizer; a
    vocabulary padded on purpose is the exception a caller may allow).
    """
    if pieces > vocab_size:
        return (
            f"has {pieces} pieces but model.vocab_size is {vocab_size}: its ids {vocab_size}..{pieces - 1} "
            "fall outside the model's embedding table"
        )
    if exact and pieces < vocab_size:
        return (
            f"has {pieces} pieces but model.vocab_size is {vocab_size}: it is most likely not the "
            "tokenizer the model was trained with"
        )
    return None


class Tokenizer:
    """A sentencepiece model that encodes a text as `[bos] + ids + [eos]`."""

    def __init__(self, model_path: str | os.PathLike):
        import sentencepiece as spm

        path = Path(model_path)
        if not path.is_file():
            raise DataError(
                f"The tokenizer model {path} does not exist. Pass the sentencepiece model the model was trained "
                f"with via --tokenizer_path (for InternLM: its tokenizer.model, e.g. saved as "
                f"tools/{TOKENIZER_FILENAME})."
            )
        # InternLM's models warn on every load about a harmless "\0" piece; hide load-time warnings only.
        spm.set_min_log_level(2)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:
            raise DataError(
                f"Cannot load {path} as a sentencepiece model ({e}); pass a sentencepiece .model file "
                f"via --tokenizer_path."
            ) from None
        finally:
            spm.set_min_log_level(0)
        self.path = str(path)
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise DataError(f"The tokenizer {path} defines no BOS or EOS token; InternEvo's data needs both.")
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """`[bos] + sentencepiece ids + [eos]`."""
        return [self.bos_id, *self.sp.encode(text), self.eos_id]
