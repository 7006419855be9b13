"""A small real-text corpus for demos and tests, built from this machine's Python standard library.

Type "code": the standard library's own `.py` sources, cut into blocks of about 40 lines.
Type "en": the docstrings of those files (extracted with `ast`), merged into paragraphs of at
least 300 characters. Every 20th sample of each type goes to the validation split.

A sentencepiece BPE model is trained on the training texts (ids as InternLM's: unk 0, bos 1,
eos 2, no pad; byte_fallback so any text encodes), unless a tokenizer is given. The texts are then
tokenized by the same code path as tools/tokenizer.py into

    DIR/tokenizer.model
    DIR/train/{code,en}/demo.bin (+ .bin.meta)
    DIR/valid/{code,en}/demo.bin (+ .bin.meta)
    DIR/.complete          (the build parameters; a build with the same parameters is skipped)

The output is deterministic for a given Python installation (sorted files, no randomness).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import shutil
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from internevo_jax.data.errors import DataError
from internevo_jax.preprocess.tokenize import tokenize_texts

TYPES = ("code", "en")
VALID_EVERY = 20  # every 20th sample is a validation sample
CODE_BLOCK_LINES = 40
MIN_PROSE_CHARS = 300
_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "lib2to3",
    "turtledemo",
}
_FORMAT_VERSION = 1
# A trained tokenizer holds unk, bos, eos and the 256 byte pieces (byte_fallback), plus one piece per
# distinct character of the texts, before any merge.
FIXED_PIECES = 3 + 256
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _too_small(vocab_size: int, needed: int | None) -> DataError:
    least = f"at least {needed}" if needed else f"more than {FIXED_PIECES}"
    fix = f"--vocab_size {needed} or more" if needed else "a larger --vocab_size"
    return DataError(
        f"vocab_size={vocab_size} is too small for the demo tokenizer: it needs {least} pieces (unk, bos, "
        f"eos, the 256 byte pieces and one per distinct character of the texts). Pass {fix} (the "
        "default, 2000, suits the demo)."
    )


def stdlib_files() -> list[Path]:
    """The standard library's .py files (tests and installed packages left out), in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("config-"))
        files += [Path(dirpath) / n for n in sorted(names) if n.endswith(".py")]
    return files


def _code_blocks(source: str) -> Iterator[str]:
    # Cut at a blank line once a block has CODE_BLOCK_LINES lines, so blocks end between statements.
    block: list[str] = []
    for line in source.splitlines():
        if not line.strip() and len(block) >= CODE_BLOCK_LINES:
            text = "\n".join(block).strip("\n")
            if text.strip():
                yield text
            block = []
        else:
            block.append(line)
    text = "\n".join(block).strip("\n")
    if text.strip():
        yield text


def _prose(source: str) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old modules
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return
    para = ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                para = f"{para}\n\n{doc.strip()}" if para else doc.strip()
                if len(para) >= MIN_PROSE_CHARS:
                    yield para
                    para = ""


def collect_texts(max_text_bytes: int) -> dict[str, list[str]]:
    """Texts per type, each type capped at max_text_bytes / 2 bytes of UTF-8."""
    cap = max_text_bytes // len(TYPES)
    texts: dict[str, list[str]] = {t: [] for t in TYPES}
    size = dict.fromkeys(TYPES, 0)
    for path in stdlib_files():
        if all(size[t] >= cap for t in TYPES):
            break
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for kind, gen in (("code", _code_blocks), ("en", _prose)):
            for text in gen(source) if size[kind] < cap else ():
                texts[kind].append(text)
                size[kind] += len(text.encode())
                if size[kind] >= cap:
                    break
    return texts


def split_texts(texts: list[str]) -> tuple[list[str], list[str]]:
    """(train, valid): every VALID_EVERY-th text is a validation text."""
    valid = [t for i, t in enumerate(texts) if i % VALID_EVERY == VALID_EVERY - 1]
    train = [t for i, t in enumerate(texts) if i % VALID_EVERY != VALID_EVERY - 1]
    return train, valid


def train_tokenizer(texts: list[str], vocab_size: int) -> bytes:
    """A sentencepiece BPE model (serialised) with InternLM's special ids, trained on the lines of `texts`."""
    import sentencepiece as spm

    if vocab_size <= FIXED_PIECES:
        raise _too_small(vocab_size, None)
    lines = [ln for t in texts for ln in t.split("\n") if ln.strip()]
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            byte_fallback=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            character_coverage=1.0,
            normalization_rule_name="identity",  # keep code's spacing as is
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            shuffle_input_sentence=False,
            hard_vocab_limit=False,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as e:
        m = _TOO_SMALL.search(str(e))
        if m:
            raise _too_small(vocab_size, int(m.group(2))) from None
        raise DataError(
            f"sentencepiece could not train a {vocab_size}-piece tokenizer on the demo texts ({e}). Try the "
            "default --vocab_size 2000, or pass --tokenizer_path with a trained model."
        ) from None
    return model.getvalue()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_demo_corpus(
    out_dir: str | os.PathLike,
    *,
    vocab_size: int = 2000,
    max_text_bytes: int = 4_000_000,
    tokenizer_path: str | os.PathLike | None = None,
    num_workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Build (or find already built) the demo corpus in `out_dir`; returns the build record.

    max_text_bytes caps the raw text (half code, half prose). tokenizer_path: use this sentencepiece
    model instead of training one (it is copied to out_dir/tokenizer.model).
    """
    if not tokenizer_path and vocab_size <= FIXED_PIECES:
        raise _too_small(vocab_size, None)  # before anything in out_dir is touched
    out = Path(out_dir)
    params = {
        "format": _FORMAT_VERSION,
        "vocab_size": int(vocab_size),
        "max_text_bytes": int(max_text_bytes),
        "tokenizer": _sha256(Path(tokenizer_path)) if tokenizer_path else "trained",
        "python": sys.version.split()[0],
        "stdlib": sysconfig.get_paths()["stdlib"],
    }
    marker = out / ".complete"
    if marker.is_file():
        try:
            record = json.loads(marker.read_text())
        except ValueError:
            record = {}
        if record.get("params") == params:
            log(f"demo corpus in {out} is up to date")
            return record
    for sub in ("train", "valid"):
        shutil.rmtree(out / sub, ignore_errors=True)
    marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    texts = collect_texts(max_text_bytes)
    splits = {kind: split_texts(texts[kind]) for kind in TYPES}
    model_path = out / "tokenizer.model"
    if tokenizer_path:
        shutil.copyfile(tokenizer_path, model_path)
    else:
        log(f"training a {vocab_size}-piece sentencepiece model")
        model_path.write_bytes(train_tokenizer([t for kind in TYPES for t in splits[kind][0]], vocab_size))
    stats = {}
    for kind in TYPES:
        for split, items in zip(("train", "valid"), splits[kind]):
            s = tokenize_texts(
                items,
                out / split / kind / "demo.bin",
                tokenizer_path=model_path,
                num_workers=num_workers,
                source=f"the {split}/{kind} demo texts",
            )
            stats[f"{split}/{kind}"] = {"samples": s.samples, "tokens": s.tokens}
            log(f"{split}/{kind}: {s.samples} samples, {s.tokens} tokens")
    import sentencepiece as spm

    actual_vocab = spm.SentencePieceProcessor(model_file=str(model_path)).get_piece_size()
    record = {"params": params, "tokenizer_vocab_size": actual_vocab, "stats": stats}
    marker.write_text(json.dumps(record, indent=1))
    return record
