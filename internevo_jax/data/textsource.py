"""Reading text from files: the one place that says what the text of a record is.

Two InternEvo readers give a `.jsonl` line different meanings, and both are kept, named by
`RecordText`:

* `RecordText.WHOLE` -- InternEvo's tools/tokenizer.py: the record as written is the text. A
  `.jsonl` line is the text raw (newline included, not parsed; blank lines too); a `.json` list
  element is `json.dumps(record)` (default ASCII escaping, braces and keys included); a `.txt` line
  is the text, stripped (empty lines skipped).
* `RecordText.FIELD` -- InternEvo's streaming dataset: the string in the record's `field` (default
  "text") is the text. A `.jsonl` line is parsed as a JSON object (blank lines are no records); a
  `.json` list element is such an object; a parquet / arrow / `datasets` row is read from the column
  `field`.

`jsonl_text` and `record_text` apply that rule; both readers below call them.

`TextReader(path)` streams the texts of one txt / json / jsonl file in order (WHOLE by default), for
the offline tokenizer: lines split like Python's text mode (universal newlines: "\\r\\n" and "\\r" end
lines too and become "\\n"), a `.json` list is parsed incrementally (never read whole), and a line
that is not UTF-8 is an error naming it (or, with errors="skip", skipped and counted). Under WHOLE a
`.jsonl` line that is not JSON is still the text (as in InternEvo), but once the file is read one
warning names the file, how many such lines it has and the first of them.

`open_text_files(path, field=..., subset_name=...)` gives the ordered record files of a streaming
`train_folder` (FIELD); each yields its records from a position (`scan(pos)`), so a reader can stop
anywhere and later resume from a saved position without re-reading what came before:

* `.jsonl` (and JSON-lines `.json`): the position is a byte offset. A `.json` holding one JSON list
  is read whole (position = index in the list).
* `.parquet`: the position is a row; one row group of the text column is in memory at a time.
* `.arrow` (Arrow IPC, as `datasets` writes its shards): memory-mapped; the position is a row.
* a folder written by `datasets.Dataset.save_to_disk` (or a DatasetDict's, whose "train" split is
  used): read with `datasets.load_from_disk`; the position is a row.

A folder of data files is walked in sorted order (subfolders too); `subset_name` selects a subfolder,
as InternEvo's `data_dir`. When some file names mark the train split (a `train` word in the path, as
`datasets` infers splits), only those are read. Parquet / arrow / save_to_disk folders need the
`datasets` package (and its pyarrow); jsonl files do not. Scanning returns a record's raw form (the
line's bytes, or the cell); `text(raw, pos)` decodes it only when the record is used, so ranks skip
each other's records without parsing them.
"""

from __future__ import annotations

import codecs
import enum
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from internevo_jax.data.errors import DataError

logger = logging.getLogger(__name__)
DEFAULT_TEXT_FIELD = "text"  # InternEvo's streaming dataset reads sample["text"] (its content_name)
FORMATS = ("txt", "json", "jsonl")  # what TextReader reads, by file extension
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")  # what open_text_files reads
_TRAIN_WORD = re.compile(r"(^|[^a-z0-9])train([^a-z0-9]|$)")
_ROWS_PER_READ = 1024
_METADATA = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by datasets next to its data


class RecordText(enum.Enum):
    """What the text of a record is (see the module docstring)."""

    WHOLE = "whole"  # the record as written: tools/tokenizer.py
    FIELD = "field"  # the string in the record's field: streaming training


def is_record_line(line: bytes | str, mode: RecordText) -> bool:
    """Whether a `.jsonl` line is a record: every line is under WHOLE, a non-blank one under FIELD."""
    return mode is RecordText.WHOLE or bool(line.strip())


def jsonl_text(line: bytes | str, mode: RecordText, field: str, where: Callable[[], str]) -> str:
    """The text of one `.jsonl` line; `where()` names the line in a DataError."""
    if mode is RecordText.WHOLE:
        return line.decode("utf-8") if isinstance(line, bytes) else line
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(
            f"{where()} is not a JSON object ({type(e).__name__}: {e}). A streaming .jsonl file "
            f"holds one JSON object per line."
        ) from None
    return record_text(record, mode, field, where)


def record_text(record: object, mode: RecordText, field: str, where: Callable[[], str]) -> str:
    """The text of one parsed JSON record (a `.json` list element, or a parsed `.jsonl` line)."""
    if mode is RecordText.WHOLE:
        return json.dumps(record)
    value = record.get(field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        raise _not_text(where(), field, value)
    return value


def _not_text(where: str, field: str, value) -> DataError:
    if value is None:
        what = f"has no {field!r} field (or it is null)"
    else:
        what = f"has a {type(value).__name__} in {field!r}, not a string"
    return DataError(
        f"{where} {what}. Streaming data reads the text of every record from the {field!r} field "
        f"(InternEvo's content_name); fix or drop the record."
    )


# -- one txt / json / jsonl file, streamed in order (the offline tokenizer) ------------------------
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

    `mode` says what a json / jsonl record's text is (WHOLE: InternEvo's tools/tokenizer.py).
    Tracks `bytes_read` of `total_bytes` for progress, `skipped` bad lines (errors="skip") and,
    for a `.jsonl` file read WHOLE, `not_json` non-blank lines that are not JSON (`first_not_json`:
    the first one's line number).
    """

    chunk_size = 1 << 20  # bytes read at a time from a .json input

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fmt: str | None = None,
        errors: str = "strict",
        mode: RecordText = RecordText.WHOLE,
        field: str = DEFAULT_TEXT_FIELD,
    ):
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
        if self.fmt == "txt" and mode is not RecordText.WHOLE:
            raise DataError(f"{self.path} is plain text: its lines have no {field!r} field to read.")
        self.errors, self.mode, self.field = errors, RecordText(mode), field
        self.total_bytes = os.path.getsize(self.path)
        self.bytes_read = 0
        self.skipped = 0
        self.not_json = 0
        self.first_not_json: int | None = None

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

    def _check_json(self, text: str, lineno: int) -> None:
        if not text.strip():
            return
        try:
            json.loads(text)
        except ValueError:
            self.not_json += 1
            if self.first_not_json is None:
                self.first_not_json = lineno

    def _warn_not_json(self) -> None:
        if self.not_json:
            lines = "1 line is" if self.not_json == 1 else f"{self.not_json} lines are"
            logger.warning(
                "%s: %s not JSON (the first: line %d); each .jsonl line is tokenized as raw text, so "
                "these were too (as in InternEvo). Fix them if the file should hold one JSON record per line.",
                self.path,
                lines,
                self.first_not_json,
            )

    def _lines(self) -> Iterator[str]:
        check_json = self.fmt == "jsonl" and self.mode is RecordText.WHOLE
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
                        if part:
                            yield part
                    elif is_record_line(part, self.mode):
                        if check_json:
                            self._check_json(part, lineno)
                        yield jsonl_text(
                            part, self.mode, self.field, lambda n=lineno: f"{self.path}, line {n}"
                        )
        self._warn_not_json()

    def _json(self) -> Iterator[str]:
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        buf, pos, line = "", 0, 1
        eof = False
        chunk = self.chunk_size
        state = "start"  # start -> first (value or ']') -> sep (',' or ']') -> value -> ... -> end
        count = 0

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
                    count += 1
                    if not bad:
                        yield record_text(
                            record, self.mode, self.field, lambda n=count: f"{self.path}, record {n}"
                        )
        if state != "end":
            fail("the file ends before the list is closed with ']'", pos)


# -- the record files of a streaming train_folder, resumable by position ---------------------------


def _need_datasets(what: str):
    try:
        import datasets  # noqa: F401  (pyarrow comes with it)
        import pyarrow
    except ImportError:
        raise DataError(
            f"Reading {what} needs the Hugging Face `datasets` package, which is not installed: "
            f"`pip install datasets`. (Plain .jsonl files need nothing extra.)"
        ) from None
    return pyarrow


class JsonlFile:
    """JSON-lines records; the position is a byte offset."""

    def __init__(self, path: str, field: str, mode: RecordText = RecordText.FIELD):
        self.path, self.field, self.mode = path, field, RecordText(mode)
        self.start = 0

    def scan(self, pos: int) -> Iterator[tuple[int, int, bytes]]:
        """(position of the record, position after it, raw line) for each record from `pos`."""
        with open(self.path, "rb") as f:
            f.seek(pos)
            for raw in f:
                start, pos = pos, pos + len(raw)
                if is_record_line(raw, self.mode):
                    yield start, pos, raw

    def text(self, raw: bytes, pos: int) -> str:
        """The text of a scanned record; DataError names the file and line."""
        return jsonl_text(raw, self.mode, self.field, lambda: self._where(pos))

    def _where(self, pos: int) -> str:
        with open(self.path, "rb") as f:
            line = f.read(pos).count(b"\n") + 1
        return f"{self.path}, line {line}"


class ListFile:
    """A `.json` file holding one JSON list of records, read whole; the position is the list index."""

    def __init__(self, path: str, field: str, mode: RecordText = RecordText.FIELD):
        self.path, self.field, self.mode = path, field, RecordText(mode)
        self.start = 0
        self._records = None

    def _load(self) -> list:
        if self._records is None:
            try:
                with open(self.path, encoding="utf-8") as f:
                    records = json.load(f)
            except (ValueError, UnicodeDecodeError) as e:
                raise DataError(
                    f"{self.path} is not valid JSON ({e}); use one JSON object per line (.jsonl)."
                ) from None
            if not isinstance(records, list):
                raise DataError(
                    f"{self.path} holds a JSON {type(records).__name__}; expected a list of records."
                )
            self._records = records
        return self._records

    def scan(self, pos: int) -> Iterator[tuple[int, int, object]]:
        records = self._load()
        for i in range(pos, len(records)):
            yield i, i + 1, records[i]

    def text(self, raw, pos: int) -> str:
        """The text of the record at list index `pos`; DataError names the file and record."""
        return record_text(raw, self.mode, self.field, lambda: f"{self.path}, record {pos + 1}")

    def __getstate__(self):
        return {**self.__dict__, "_records": None}  # re-read in another process instead of copying


class ColumnFile:
    """Rows of one text column of a parquet file, an arrow file or a `datasets.Dataset`; position = row."""

    def __init__(self, path: str, field: str, kind: str, split: str | None = None):
        self.path, self.field, self.kind, self.split = path, field, kind, split
        self.start = 0
        self._reader = None

    def _open(self):
        if self._reader is None:
            pa = _need_datasets(f"{self.path}")
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                self._reader = _ParquetColumn(pq.ParquetFile(self.path), self.field, self.path)
            elif self.kind == "arrow":
                self._reader = _TableColumn(_read_arrow(pa, self.path), self.field, self.path)
            else:
                self._reader = _DatasetColumn(_load_from_disk(self.path, self.split), self.field, self.path)
        return self._reader

    def scan(self, pos: int) -> Iterator[tuple[int, int, object]]:
        reader = self._open()
        n = reader.num_rows
        while pos < n:
            values = reader.read(pos, min(pos + _ROWS_PER_READ, n))
            for i, value in enumerate(values, pos):
                yield i, i + 1, value
            pos += len(values)

    def text(self, raw, pos: int) -> str:
        if not isinstance(raw, str):
            raise _not_text(f"{self.path}, row {pos}", self.field, raw)
        return raw

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}  # reopened lazily in another process


def _missing_column(path: str, field: str, names) -> DataError:
    return DataError(
        f"{path} has no column {field!r} (it has {list(names)}). Streaming data reads the text from "
        f"{field!r} (InternEvo's content_name); rename the column."
    )


class _ParquetColumn:
    def __init__(self, pf, field: str, path: str):
        if field not in pf.schema_arrow.names:
            raise _missing_column(path, field, pf.schema_arrow.names)
        self.pf, self.field = pf, field
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.num_rows = self.starts[-1]
        self._group, self._values = -1, []

    def read(self, a: int, b: int) -> list:
        import bisect

        g = bisect.bisect_right(self.starts, a) - 1
        if g != self._group:
            self._group = g
            self._values = self.pf.read_row_group(g, columns=[self.field]).column(0).to_pylist()
        lo = self.starts[g]
        return self._values[a - lo : min(b, self.starts[g + 1]) - lo]


class _TableColumn:
    def __init__(self, table, field: str, path: str):
        if field not in table.column_names:
            raise _missing_column(path, field, table.column_names)
        self.column = table.column(field)
        self.num_rows = table.num_rows

    def read(self, a: int, b: int) -> list:
        return self.column.slice(a, b - a).to_pylist()


class _DatasetColumn:
    def __init__(self, ds, field: str, path: str):
        if field not in ds.column_names:
            raise _missing_column(path, field, ds.column_names)
        self.ds, self.field = ds.with_format(None), field
        self.num_rows = len(ds)

    def read(self, a: int, b: int) -> list:
        return self.ds[a:b][self.field]


def _read_arrow(pa, path: str):
    source = pa.memory_map(path)
    try:
        return pa.ipc.open_stream(source).read_all()  # what `datasets` writes
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(path)).read_all()


def _load_from_disk(path: str, split: str | None):
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"The datasets folder {path} holds the splits {list(ds)} but no {split!r} split, which "
                f"streaming training reads (as InternEvo's split='train')."
            )
        ds = ds[split]
    return ds


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _file_reader(path: str, field: str):
    if path.endswith(".jsonl"):
        return JsonlFile(path, field)
    if path.endswith(".json"):
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        return ListFile(path, field) if head.startswith(b"[") else JsonlFile(path, field)
    if path.endswith(".parquet"):
        _need_datasets(path)
        return ColumnFile(path, field, "parquet")
    if path.endswith(".arrow"):
        _need_datasets(path)
        return ColumnFile(path, field, "arrow")
    raise DataError(
        f"Cannot read {path} as streaming data: use .jsonl / .json (JSON records), .parquet or .arrow files, "
        f"or a folder written by datasets' save_to_disk."
    )


def open_text_files(
    path: str | os.PathLike, *, field: str = DEFAULT_TEXT_FIELD, subset_name: str | None = None
) -> list:
    """The ordered record files of a streaming `train_folder` (see the module docstring)."""
    root = Path(path)
    if subset_name:
        root = root / subset_name
    if root.is_file():
        return [_file_reader(str(root), field)]
    if not root.is_dir():
        raise DataError(
            f"The streaming data path {root} does not exist. Set data.train_folder to a .jsonl file, a folder "
            f"of .jsonl / .parquet / .arrow files, or a folder written by datasets' save_to_disk"
            + (" (data.subset_name names a subfolder of it)." if subset_name else ".")
        )
    if _is_saved_dataset(root):
        _need_datasets(f"the datasets folder {root}")
        return [ColumnFile(str(root), field, "saved", split="train")]
    found = []
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if (
                name.endswith(DATA_SUFFIXES)
                and not name.startswith((".", "cache-"))
                and name not in _METADATA
            ):
                found.append(os.path.join(dirpath, name))
    train = [p for p in found if _TRAIN_WORD.search(os.path.relpath(p, root).lower())]
    found = train or found
    if not found:
        raise DataError(
            f"The streaming data folder {root} holds no .jsonl, .json, .parquet or .arrow files (nor a "
            f"datasets save_to_disk folder). Point data.train_folder at the raw text."
        )
    return [_file_reader(p, field) for p in found]
