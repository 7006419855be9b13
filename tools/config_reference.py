"""Write docs/config_reference.md from the config schema and internevo_jax/config/key_docs.py.

    python tools/config_reference.py            # (re)write the reference
    python tools/config_reference.py --check    # exit 1 if the committed file is out of date

A schema key without a meaning in key_docs.py, or a meaning for a key the schema no longer has,
stops both with exit status 2 and names the key and the file to edit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from internevo_jax.config.reference import (  # noqa: E402
    REFERENCE_PATH,
    meaning_problems,
    render_reference,
    stale_reference_message,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when the file differs from what the schema gives",
    )
    p.add_argument(
        "--out", default=str(REPO / REFERENCE_PATH), help=f"output file (default {REFERENCE_PATH})"
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    problems = meaning_problems()
    if problems:
        print("error: the config reference cannot be generated:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.check:
        message = stale_reference_message(out)
        if message:
            print(f"error: {message}", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    text = render_reference()
    if out.is_file() and out.read_text(encoding="utf-8") == text:
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
