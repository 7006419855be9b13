"""Tokenize raw text into InternEvo's `.bin` + `.bin.meta` format.

    python tools/tokenizer.py --text_input_path data.txt --bin_output_path out/train/en/data.bin \
        [--tokenizer_path tools/tokenizer_internlm.model] [--num_workers 8] [--errors skip]

Inputs: .txt (one sample per non-empty line), .json (a list of records), .jsonl (one per line).
See docs/data.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR.parent))  # run from a checkout without installing

from internevo_jax.data.errors import DataError  # noqa: E402
from internevo_jax.data.tokenizer import TOKENIZER_FILENAME  # noqa: E402
from internevo_jax.preprocess.tokenize import tokenize_file  # noqa: E402
from internevo_jax.writable import ERROR_EXIT, check_writable  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text_input_path", required=True, help="input .txt, .json or .jsonl file")
    p.add_argument(
        "--bin_output_path", required=True, help="output .bin path (the .bin.meta goes next to it)"
    )
    p.add_argument(
        "--tokenizer_path",
        default=str(TOOLS_DIR / TOKENIZER_FILENAME),
        help=f"sentencepiece model (default: tools/{TOKENIZER_FILENAME}, as InternEvo)",
    )
    p.add_argument("--num_workers", type=int, default=1, help="encoding processes (order is kept)")
    p.add_argument(
        "--errors",
        choices=("strict", "skip"),
        default="strict",
        help="non-UTF-8 lines: stop with an error (strict) or skip and count them",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        check_writable(
            os.path.dirname(args.bin_output_path),
            fix="Pass a --bin_output_path in a folder you can write to.",
            error=DataError,
        )
        stats = tokenize_file(
            args.text_input_path,
            args.bin_output_path,
            tokenizer_path=args.tokenizer_path,
            num_workers=args.num_workers,
            errors=args.errors,
            progress_stream=None if args.quiet else sys.stderr,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    print(
        f"Successfully converted {args.text_input_path} to {stats.bin_path} ({stats.samples} samples, {stats.tokens} tokens)"
    )
    print(f"Successfully generated {stats.meta_path}")
    if stats.skipped_lines:
        print(f"Skipped {stats.skipped_lines} lines that are not valid UTF-8", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
