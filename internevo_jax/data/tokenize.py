"""Raw text -> `.bin` + `.bin.meta`, as InternEvo's tools/tokenizer.py does it (the tool is a thin CLI).

Inputs, by file extension (InternEvo's rules):

* `.txt`: one sample per line, stripped; empty lines are skipped.
* `.json`: a list of records; each record's `json.dumps(record)` (default ASCII escaping) is the text.
* `.jsonl`: each raw line, newline included and not parsed, is the text.

Lines are split like Python's text mode (universal newlines: "\\r\\n" and "\\r" end lines too and
become "\\n"). A sample's tokens are `[bos] + sentencepiece ids + [eos]`.

Unlike InternEvo, the input is streamed (never read whole), the output is written to temporary
names and moved into place at the end (InternEvo appends to an existing `.bin`), a non-UTF-8 line is
an error naming the line (or is skipped and counted with errors="skip"), and an empty input is an
error that leaves no output.
"""

from __future__ import annotations

import codecs
import json
import multiprocessing
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from internevo_jax.data.binmeta import BinWriter, encode_line, meta_path_for
from internevo_jax.data.errors import DataError

FORMATS = ("txt", "json", "jsonl")
TOKENIZER_FILENAME = "tokenizer_internlm.model"


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
        return [self.bos_id, *self.sp.encode(text), self.eos_id]


@dataclass
class TokenizeStats:
    """What a tokenization run wrote."""

    bin_path: str
    meta_path: str
    samples: int = 0
    tokens: int = 0
    skipped_lines: int = 0


def _split_universal(text: str) -> list[str]:
    # Binary lines end at "\n" only; Python's text mode also ends lines at "\r" and "\r\n".
    if "\r" not in text:
        return [text]
    parts = text.replace("\r\n", "\n").split("\r")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


_WS = re.compile(r"[ \t\n\r]*")
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # undecodable bytes under surrogateescape


class TextReader:
    """Streams the texts of a txt / json / jsonl file (see the module docstring).

    Tracks `bytes_read` of `total_bytes` for progress and `skipped` bad lines (errors="skip").
    """

    chunk_size = 1 << 20  # bytes read at a time from a .json input

    def __init__(self, path: str | os.PathLike, *, fmt: str | None = None, errors: str = "strict"):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DataError(f"The input file {self.path} does not exist (or is not a file).")
        self.fmt = fmt or Path(self.path).suffix.lstrip(".").lower()
        if self.fmt not in FORMATS:
            raise DataError(
                f"Cannot tell the format of {self.path}: the file name must end in .txt (one sample per line), "
                f".json (a list of records) or .jsonl (one record per line)."
            )
        if errors not in ("strict", "skip"):
            raise ValueError(f"errors must be 'strict' or 'skip', got {errors!r}")
        self.errors = errors
        self.total_bytes = os.path.getsize(self.path)
        self.bytes_read = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[str]:
        return self._json() if self.fmt == "json" else self._lines()

    def _bad_utf8(self, line: int, detail: str) -> None:
        if self.errors == "skip":
            self.skipped += 1
            return
        raise DataError(
            f"{self.path}, line {line}: not valid UTF-8 ({detail}). Convert the file to UTF-8 (e.g. "
            f"`iconv -f <encoding> -t utf-8`), or pass --errors skip to drop such lines and count them."
        )

    def _lines(self) -> Iterator[str]:
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                self.bytes_read += len(raw)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self._bad_utf8(lineno, f"{e.reason} at byte {e.start} of the line")
                    continue
                for part in _split_universal(text):
                    if self.fmt == "txt":
                        part = part.strip()
                        if not part:
                            continue
                    yield part

    def _json(self) -> Iterator[str]:
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        buf, pos, line = "", 0, 1
        eof = False
        chunk = self.chunk_size
        state = "start"  # start -> first (value or ']') -> sep (',' or ']') -> value -> ... -> end

        def fail(msg: str, at: int) -> None:
            raise DataError(
                f"{self.path}, line {line + buf.count(chr(10), pos, at)}: {msg}. A .json input must be one JSON "
                f"list of records ([{{...}}, {{...}}]); for one record per line name the file .jsonl."
            )

        with open(self.path, "rb") as f:
            while True:
                m = _WS.match(buf, pos)
                line += buf.count("\n", pos, m.end())
                pos = m.end()
                if pos > chunk:  # drop what has been consumed
                    buf, pos = buf[pos:], 0
                if pos == len(buf):
                    if eof:
                        break
                    data = f.read(chunk)
                    self.bytes_read += len(data)
                    eof = not data
                    buf += utf8.decode(data, final=eof)
                    continue
                c = buf[pos]
                if state == "start":
                    if c != "[":
                        fail("the top level is not a list", pos)
                    pos, state = pos + 1, "first"
                elif state == "sep":
                    if c == ",":
                        pos, state = pos + 1, "value"
                    elif c == "]":
                        pos, state = pos + 1, "end"
                    else:
                        fail(f"expected ',' or ']' between records, found {c!r}", pos)
                elif state == "end":
                    fail("extra data after the closing ']'", pos)
                elif c == "]" and state == "first":
                    pos, state = pos + 1, "end"
                else:
                    try:
                        record, end = decoder.raw_decode(buf, pos)
                    except json.JSONDecodeError as e:
                        if eof:
                            fail(f"malformed record ({e.msg})", e.pos)
                        data = f.read(chunk)  # the record may continue beyond the buffer
                        chunk *= 2
                        self.bytes_read += len(data)
                        eof = not data
                        buf += utf8.decode(data, final=eof)
                        continue
                    if end == len(buf) and not eof:  # a number may continue beyond the buffer
                        data = f.read(chunk)
                        self.bytes_read += len(data)
                        eof = not data
                        buf += utf8.decode(data, final=eof)
                        continue
                    bad = _BAD_BYTES.search(buf, pos, end)
                    if bad:
                        self._bad_utf8(
                            line + buf.count("\n", pos, bad.start()), "undecodable bytes in a record"
                        )
                    line += buf.count("\n", pos, end)
                    pos, state = end, "sep"
                    if not bad:
                        yield json.dumps(record)
        if state != "end":
            fail("the file ends before the list is closed with ']'", pos)


# -- encoding, in this process or in worker processes ---------------------------------------------
_worker_tokenizer: Tokenizer | None = None


def _init_worker(model_path: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer(model_path)


def _encode_batch(texts: list[str], tokenizer: Tokenizer | None = None) -> list[tuple[bytes, int]]:
    tok = tokenizer or _worker_tokenizer
    out = []
    for text in texts:
        ids = tok.encode(text)
        out.append((encode_line(ids), len(ids)))
    return out


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_texts(
    texts: Iterable[str],
    bin_output_path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike,
    num_workers: int = 1,
    source: str = "the input",
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 256,
) -> TokenizeStats:
    """Tokenize `texts` in order into `bin_output_path` (+ `.meta`), committed only on success.

    num_workers > 1 encodes batches in that many processes (spawned, so safe after jax is imported);
    the output order is the input order. `progress(samples, tokens)` is called after each batch.
    Raises DataError when `texts` is empty (`source` names it in the message).
    """
    tokenizer = Tokenizer(tokenizer_path)  # also validates the path before any work
    stats = TokenizeStats(str(bin_output_path), str(meta_path_for(bin_output_path)))
    writer = BinWriter(bin_output_path)
    try:

        def write(lines: list[tuple[bytes, int]]) -> None:
            for line, n in lines:
                writer.write_line(line, n)
            if progress is not None:
                progress(writer.num_samples, writer.num_tokens)

        if num_workers <= 1:
            for batch in _batches(texts, batch_size):
                write(_encode_batch(batch, tokenizer))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer.path,)) as pool:
                pending: deque = deque()
                for batch in _batches(texts, batch_size):
                    pending.append(pool.apply_async(_encode_batch, (batch,)))
                    if len(pending) >= 4 * num_workers:  # bounded: the input is never held whole
                        write(pending.popleft().get())
                while pending:
                    write(pending.popleft().get())
        if writer.num_samples == 0:
            raise DataError(f"{source} holds no samples (no non-empty text), so no .bin was written.")
        stats.samples, stats.tokens = writer.num_samples, writer.num_tokens
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return stats


class ProgressPrinter:
    """Prints `tokenize: 42.0% of IN, N samples, M tokens` to a stream at most every `interval` s."""

    def __init__(self, reader: TextReader, stream=sys.stderr, interval: float = 2.0):
        self.reader, self.stream, self.interval = reader, stream, interval
        self._last = time.monotonic()
        self._printed = -1

    def __call__(self, samples: int, tokens: int, final: bool = False) -> None:
        now = time.monotonic()
        if (not final and now - self._last < self.interval) or samples == self._printed:
            return
        self._last, self._printed = now, samples
        total = max(self.reader.total_bytes, 1)
        pct = 100.0 * min(self.reader.bytes_read, total) / total
        print(
            f"tokenize: {pct:5.1f}% of {self.reader.path}, {samples} samples, {tokens} tokens",
            file=self.stream,
            flush=True,
        )


def tokenize_file(
    text_input_path: str | os.PathLike,
    bin_output_path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike,
    num_workers: int = 1,
    errors: str = "strict",
    progress_stream=None,
) -> TokenizeStats:
    """Tokenize a txt / json / jsonl file into `bin_output_path` and its `.meta` (InternEvo's format)."""
    reader = TextReader(text_input_path, errors=errors)
    printer = ProgressPrinter(reader, progress_stream) if progress_stream is not None else None
    stats = tokenize_texts(
        reader,
        bin_output_path,
        tokenizer_path=tokenizer_path,
        num_workers=num_workers,
        source=f"The input file {text_input_path}" + (" (bad lines skipped)" if errors == "skip" else ""),
        progress=printer,
    )
    stats.skipped_lines = reader.skipped
    if printer is not None:
        printer(stats.samples, stats.tokens, final=True)
    return stats
