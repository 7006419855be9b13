"""Offline data preparation: raw text -> InternEvo's tokenized `.bin` + `.bin.meta` files.

The engines of the tools/ CLIs: `tokenize_file` (tools/tokenizer.py), `tokenize_alpaca`
(tools/alpaca_tokenizer.py) and `build_demo_corpus` (tools/build_demo_data.py). They write with the
runtime data package's `.bin` writer and read text with its `TextReader`; training never imports
this package. See docs/data.md.
"""

from internevo_jax.preprocess.alpaca import AlpacaEncoder, read_alpaca_records, tokenize_alpaca, valid_indices
from internevo_jax.preprocess.demo_corpus import build_demo_corpus
from internevo_jax.preprocess.tokenize import TokenizeStats, tokenize_file, tokenize_texts

__all__ = [
    "AlpacaEncoder",
    "TokenizeStats",
    "build_demo_corpus",
    "read_alpaca_records",
    "tokenize_alpaca",
    "tokenize_file",
    "tokenize_texts",
    "valid_indices",
]
