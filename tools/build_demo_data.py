"""Build the demo corpus (Python standard library code + docstrings) as tokenized InternEvo data.

    python tools/build_demo_data.py --out data/demo [--vocab_size 2000] [--max_text_bytes 4000000]
        [--tokenizer_path MODEL] [--num_workers N]

Writes OUT/tokenizer.model, OUT/train/{code,en}/demo.bin(+.meta), OUT/valid/{code,en}/demo.bin(+.meta).
Re-running with the same parameters does nothing. See docs/data.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from internevo_jax.data.errors import DataError  # noqa: E402
from internevo_jax.preprocess.demo_corpus import build_demo_corpus  # noqa: E402
from internevo_jax.writable import ERROR_EXIT, check_writable  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocab_size", type=int, default=2000, help="size of the trained tokenizer")
    p.add_argument(
        "--max_text_bytes", type=int, default=4_000_000, help="cap on raw text (half code, half prose)"
    )
    p.add_argument(
        "--tokenizer_path", default=None, help="use this sentencepiece model instead of training one"
    )
    p.add_argument("--num_workers", type=int, default=1, help="encoding processes")
    args = p.parse_args(argv)
    try:
        check_writable(args.out, fix="Pass an --out folder you can write to.", error=DataError)
        build_demo_corpus(
            args.out,
            vocab_size=args.vocab_size,
            max_text_bytes=args.max_text_bytes,
            tokenizer_path=args.tokenizer_path,
            num_workers=args.num_workers,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
