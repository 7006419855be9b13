"""Tokenize Alpaca-style instruction data into InternEvo's SFT `.bin` format (prompts masked from the loss).

    python tools/alpaca_tokenizer.py alpaca_data.json OUT tokenizer_internlm.model [--split_ratio 0.1]

Writes OUT/train/en/dataset.bin(+.meta) and OUT/valid/en/dataset.bin(+.meta). See docs/data.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from internevo_jax.data.errors import DataError  # noqa: E402
from internevo_jax.preprocess.alpaca import EOA_ID, EOH_ID, tokenize_alpaca  # noqa: E402
from internevo_jax.writable import ERROR_EXIT, check_writable  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset_path", help="alpaca .json list of records (or .jsonl, one record per line)")
    p.add_argument("output_path", help="output folder (train/en/ and valid/en/ are created in it)")
    p.add_argument("tokenizer_path", help="sentencepiece model, e.g. tokenizer_internlm.model")
    p.add_argument("--split_ratio", type=float, default=0.1, help="share of records for validation")
    p.add_argument("--eoh_id", type=int, default=EOH_ID, help=f"end-of-human token id (default {EOH_ID})")
    p.add_argument("--eoa_id", type=int, default=EOA_ID, help=f"end-of-answer token id (default {EOA_ID})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_writable(args.output_path, fix="Pass an output_path folder you can write to.", error=DataError)
        stats = tokenize_alpaca(
            args.dataset_path,
            args.output_path,
            args.tokenizer_path,
            split_ratio=args.split_ratio,
            eoh_id=args.eoh_id,
            eoa_id=args.eoa_id,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    print(
        f"number of train dataset: {stats.train_samples}, number of train dataset token: {stats.train_tokens}"
    )
    print(
        f"number of validation dataset: {stats.valid_samples}, number of validation dataset token: "
        f"{stats.valid_tokens}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
