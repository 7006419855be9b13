"""Raw text records for streaming training: jsonl files, or a local Hugging Face `datasets` folder.

`open_text_files(path, field=..., subset_name=...)` returns the ordered list of files to read; each
file yields its records from a position (`scan(pos)`), so a reader can stop anywhere and later resume
from a saved position without re-reading what came before:

* `.jsonl` (and JSON-lines `.json`): the position is a byte offset; a record is one non-blank line, a
  JSON object whose `field` is the text. A `.json` holding one JSON list is read whole (position =
  index in the list).
* `.parquet`: the position is a row; one row group of the text column is in memory at a time.
* `.arrow` (Arrow IPC, as `datasets` writes its shards): memory-mapped; the position is a row.
* a folder written by `datasets.Dataset.save_to_disk` (or a DatasetDict's, whose "train" split is
  used): read with `datasets.load_from_disk`; the position is a row.

A folder of data files is walked in sorted order (subfolders too); `subset_name` selects a subfolder,
as InternEvo's `data_dir`. When some file names mark the train split (a `train` word in the path, as
`datasets` infers splits), only those are read. Parquet / arrow / save_to_disk folders need the
`datasets` package (and its pyarrow); jsonl files do not.

Scanning returns a record's raw form (the line's bytes, or the cell); `text(raw, pos)` decodes it
only when the record is used, so ranks skip each other's records without parsing them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from internevo_jax.data.errors import DataError

DEFAULT_TEXT_FIELD = "text"  # InternEvo's content_name default
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")
_TRAIN_WORD = re.compile(r"(^|[^a-z0-9])train([^a-z0-9]|$)")
_ROWS_PER_READ = 1024
_METADATA = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by datasets next to its data


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


def _not_text(where: str, field: str, value) -> DataError:
    if value is None:
        what = f"has no {field!r} field (or it is null)"
    else:
        what = f"has a {type(value).__name__} in {field!r}, not a string"
    return DataError(
        f"{where} {what}. Streaming data reads the text of every record from the {field!r} field "
        f"(InternEvo's content_name); fix or drop the record."
    )


class JsonlFile:
    """JSON-lines records; the position is a byte offset."""

    def __init__(self, path: str, field: str):
        self.path, self.field = path, field
        self.start = 0

    def scan(self, pos: int) -> Iterator[tuple[int, int, bytes]]:
        """(position of the record, position after it, raw line) for each record from `pos`."""
        with open(self.path, "rb") as f:
            f.seek(pos)
            for raw in f:
                start, pos = pos, pos + len(raw)
                if raw.strip():
                    yield start, pos, raw

    def text(self, raw: bytes, pos: int) -> str:
        """The text of a scanned record; DataError names the file and line."""
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(
                f"{self._where(pos)} is not a JSON object ({type(e).__name__}: {e}). A streaming .jsonl file "
                f"holds one JSON object per line."
            ) from None
        value = record.get(self.field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise _not_text(self._where(pos), self.field, value)
        return value

    def _where(self, pos: int) -> str:
        with open(self.path, "rb") as f:
            line = f.read(pos).count(b"\n") + 1
        return f"{self.path}, line {line}"


class ListFile:
    """A `.json` file holding one JSON list of records, read whole; the position is the list index."""

    def __init__(self, path: str, field: str):
        self.path, self.field = path, field
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
        value = raw.get(self.field) if isinstance(raw, dict) else None
        if not isinstance(value, str):
            raise _not_text(f"{self.path}, record {pos + 1}", self.field, value)
        return value

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
