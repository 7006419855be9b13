"""Raw text -> `.bin` + `.bin.meta`, as InternEvo's tools/tokenizer.py does it (the tool is a thin CLI).

Inputs, by file extension, are read by `data.textsource.TextReader` with `RecordText.WHOLE`
(InternEvo's rules, stated there): a `.txt` line stripped, a `.json` list element's
`json.dumps(record)`, a `.jsonl` raw line is the text. A sample's tokens are
`[bos] + sentencepiece ids + [eos]`.

Unlike InternEvo, the input is streamed (never read whole), the output is written to temporary
names and moved into place at the end (InternEvo appends to an existing `.bin`), a non-UTF-8 line is
an error naming the line (or is skipped and counted with errors="skip"), and an empty input is an
error that leaves no output.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from internevo_jax.data.binmeta import BinWriter, encode_line, meta_path_for
from internevo_jax.data.errors import DataError
from internevo_jax.data.textsource import RecordText, TextReader
from internevo_jax.data.tokenizer import Tokenizer


@dataclass
class TokenizeStats:
    """What a tokenization run wrote."""

    bin_path: str
    meta_path: str
    samples: int = 0
    tokens: int = 0
    skipped_lines: int = 0


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
    reader = TextReader(text_input_path, errors=errors, mode=RecordText.WHOLE)
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
