"""InternEvo's tokenized data format: `.bin` (one JSON line per sample) plus `.bin.meta`.

A `.bin` file holds one sample per line, `json.dumps({"tokens": [...]}) + "\\n"` in UTF-8.
`<file>.bin.meta` is `np.save` of an (N, 2) integer array: (byte offset of the line, number of tokens).
InternEvo's tools/tokenizer.py writes it as int32, its alpaca_tokenizer.py as int64; both are read.

This module writes that format (`BinWriter`), reads it lazily (`BinSource`, memory-mapped, one line
per `__getitem__`), and walks a data folder the way InternEvo does (`find_bin_files`).
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from internevo_jax.data.errors import DataError

META_SUFFIX = ".meta"
_INT32_MAX = np.iinfo(np.int32).max


def encode_line(tokens: Sequence[int]) -> bytes:
    """One `.bin` line, byte-identical to InternEvo's `str.encode(json.dumps({"tokens": ...}) + "\\n")`."""
    return (json.dumps({"tokens": [int(t) for t in tokens]}) + "\n").encode()


def meta_path_for(bin_path: str | os.PathLike) -> Path:
    """The `.bin.meta` path that belongs to `bin_path` (no `.npy` suffix, as InternEvo names it)."""
    return Path(f"{os.fspath(bin_path)}{META_SUFFIX}")


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


class BinWriter:
    """Writes a `.bin` + `.bin.meta` pair; both appear only when `close()` commits them.

    Lines go to hidden temporary files first. On commit the old `.bin` (if any) is removed, the new
    `.meta` is renamed into place, then the new `.bin`: at no moment does a `.bin` exist next to a
    `.meta` that does not describe it. The meta is int32 like InternEvo's tokenizer, unless an offset
    no longer fits (a `.bin` over 2 GiB), where it is int64 (InternEvo's int32 would silently wrap).
    `meta_dtype=np.int64` always writes int64, as InternEvo's alpaca_tokenizer.py does.
    """

    def __init__(self, bin_path: str | os.PathLike, *, meta_dtype=None):
        self.meta_dtype = None if meta_dtype is None else np.dtype(meta_dtype)
        self.bin_path = Path(bin_path)
        self.meta_path = meta_path_for(self.bin_path)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = _tmp_path(self.bin_path)
        self._tmp_meta = _tmp_path(self.meta_path)
        self._file = open(self._tmp_bin, "wb")  # noqa: SIM115 -- closed in close()/abort()
        self._offsets = array("q")
        self._lengths = array("q")
        self._offset = 0
        self.num_tokens = 0
        self._done = False

    @property
    def num_samples(self) -> int:
        return len(self._lengths)

    def write(self, tokens: Sequence[int]) -> None:
        """Append one sample."""
        self.write_line(encode_line(tokens), len(tokens))

    def write_line(self, line: bytes, num_tokens: int) -> None:
        """Append one already-encoded line (see `encode_line`) holding `num_tokens` tokens."""
        self._file.write(line)
        self._offsets.append(self._offset)
        self._lengths.append(num_tokens)
        self._offset += len(line)
        self.num_tokens += num_tokens

    def close(self) -> None:
        """Flush both files and move them into place."""
        if self._done:
            return
        self._done = True
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            meta = np.stack(
                [np.frombuffer(self._offsets, dtype=np.int64), np.frombuffer(self._lengths, dtype=np.int64)],
                axis=1,
            )
            if self.meta_dtype is not None:
                meta = meta.astype(self.meta_dtype)
            elif self._offset <= _INT32_MAX:
                meta = meta.astype(np.int32)
            with open(self._tmp_meta, "wb") as f:
                np.save(f, meta)
                f.flush()
                os.fsync(f.fileno())
            if self.bin_path.exists():
                self.bin_path.unlink()
            os.replace(self._tmp_meta, self.meta_path)
            os.replace(self._tmp_bin, self.bin_path)
        except BaseException:
            self._cleanup()
            raise

    def abort(self) -> None:
        """Drop everything written; the output paths are left untouched."""
        if self._done:
            return
        self._done = True
        self._cleanup()

    def _cleanup(self) -> None:
        if not self._file.closed:
            self._file.close()
        for p in (self._tmp_bin, self._tmp_meta):
            p.unlink(missing_ok=True)

    def __enter__(self) -> BinWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bin(bin_path: str | os.PathLike, samples: Iterable[Sequence[int]]) -> int:
    """Write `samples` (token lists) as a `.bin` + `.bin.meta` pair; returns the number of samples."""
    with BinWriter(bin_path) as w:
        for tokens in samples:
            w.write(tokens)
        return w.num_samples


def read_meta(bin_path: str | os.PathLike, *, bin_size: int | None = None) -> np.ndarray:
    """Load and check the meta of `bin_path`: an (N, 2) integer array, memory-mapped where possible.

    Raises DataError when the meta is missing, unreadable, of the wrong shape or dtype, or points
    outside the `.bin` file.
    """
    bin_path = Path(bin_path)
    meta_path = _find_meta(bin_path)
    try:
        meta = np.load(meta_path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises several types for a damaged header
        raise DataError(
            f"Cannot read the meta file {meta_path} ({type(e).__name__}: {e}). It should be np.save of an "
            f"(N, 2) array of (byte offset, number of tokens); re-create it by re-running tools/tokenizer.py "
            f"on the source text (it writes {bin_path.name} and {meta_path.name} together)."
        ) from None
    if meta.ndim == 1 and meta.shape[0] == 0:  # np.save of an empty list
        return np.zeros((0, 2), dtype=np.int64)
    if meta.ndim != 2 or meta.shape[1] != 2 or meta.dtype.kind not in "iu":
        raise DataError(
            f"The meta file {meta_path} holds a {meta.dtype} array of shape {meta.shape}; expected an integer "
            f"array of shape (N, 2) with (byte offset, number of tokens) per sample of {bin_path}. Re-create it "
            f"by re-running tools/tokenizer.py on the source text."
        )
    if bin_size is None:
        bin_size = bin_path.stat().st_size
    offsets, lengths = meta[:, 0], meta[:, 1]
    if len(meta) and (offsets.min() < 0 or offsets.max() >= bin_size or lengths.min() < 0):
        bad = int(np.flatnonzero((offsets < 0) | (offsets >= bin_size) | (lengths < 0))[0])
        raise DataError(
            f"The meta file {meta_path} is corrupt or belongs to another file: row {bad} is "
            f"(offset {int(offsets[bad])}, length {int(lengths[bad])}) but {bin_path} has {bin_size} bytes. "
            f"Re-create the meta by re-running tools/tokenizer.py, which writes both files together "
            f"(an int32 meta of a .bin over 2 GiB wraps to negative offsets: split such files)."
        )
    return meta


def _find_meta(bin_path: Path) -> Path:
    # InternEvo looks next to the resolved path; also accept a meta beside an unresolved symlink.
    candidates = [meta_path_for(bin_path.resolve()), meta_path_for(bin_path)]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"The data file {bin_path} has no meta file {candidates[1].name} next to it. Every .bin needs its "
        f".bin.meta (np.save of (byte offset, number of tokens) per line); tools/tokenizer.py writes both. "
        f"Re-run it, or move stray .bin files out of the data folder."
    )


class BinSource:
    """Random access to the samples of one `.bin` file (a grain RandomAccessDataSource).

    `source[i]` reads line i of the (min_length-filtered) meta from a memory map and returns its
    tokens as an int32 array; nothing else of the file is read. `lengths` comes from the meta alone.
    Token ids are checked per sample: abs(id) < vocab_size (negative ids are InternEvo's "masked from
    the loss" marker).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        type_id: int = 0,
        min_length: int = 0,
        vocab_size: int | None = None,
    ):
        self.path = str(path)
        self.type_id = int(type_id)
        self.vocab_size = vocab_size
        if not os.path.isfile(self.path):
            raise DataError(
                f"The data file {self.path} does not exist or is not a file; check the data folder."
            )
        self._size = os.path.getsize(self.path)
        meta = read_meta(self.path, bin_size=self._size)
        # Copies, so that no file handle on the meta stays open (datasets can have thousands of files).
        lengths = np.array(meta[:, 1], dtype=np.int64)
        if min_length > 0:
            keep = np.flatnonzero(lengths >= min_length)
            self.offsets = np.array(meta[keep, 0], dtype=np.int64)
            self.lengths = lengths[keep]
            self.rows = keep  # meta row of each kept sample, for error messages
        else:
            self.offsets = np.array(meta[:, 0], dtype=np.int64)
            self.lengths = lengths
            self.rows = None
        self.num_unfiltered = len(meta)
        self.num_tokens = int(self.lengths.sum())
        del meta

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {self.path} ({len(self)} samples)")
        offset = int(self.offsets[index])
        mm = self._map()
        end = mm.find(b"\n", offset)
        raw = mm[offset : (end if end >= 0 else len(mm))]
        tokens = self._parse(raw, index, offset)
        if len(tokens) != self.lengths[index]:
            self._fail(
                index,
                offset,
                f"has {len(tokens)} tokens but the meta says {int(self.lengths[index])}: the .bin and "
                f".bin.meta do not belong together (was one of them rewritten?). Re-run tools/tokenizer.py, "
                f"which writes both files together.",
            )
        return tokens

    def _parse(self, raw: bytes, index: int, offset: int) -> np.ndarray:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self._fail(
                index, offset, f"is not valid UTF-8 ({e.reason} at byte {e.start} of the line)" + _REBUILD
            )
        try:
            obj = json.loads(text)
            tokens = obj["tokens"]
            if not isinstance(tokens, list):
                raise TypeError("'tokens' is not a list")
            arr = np.asarray(tokens) if tokens else np.zeros(0, dtype=np.int64)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise TypeError("'tokens' is not a flat list of integers")
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            what = (
                "is truncated or corrupt"
                if not raw.endswith(b"}")
                else 'is not a {"tokens": [int, ...]} line'
            )
            self._fail(index, offset, f"{what} ({type(e).__name__}: {e})" + _REBUILD)
        if self.vocab_size is not None and len(arr):
            big = np.abs(arr) >= self.vocab_size
            if big.any():
                bad = int(arr[np.flatnonzero(big)[0]])
                self._fail(
                    index,
                    offset,
                    f"has token id {bad}, outside the model's vocabulary of {self.vocab_size} (ids must satisfy "
                    f"abs(id) < model.vocab_size). The data was tokenized with a different tokenizer than the "
                    f"model expects: re-tokenize with the model's tokenizer, or set model.vocab_size to the "
                    f"tokenizer's size.",
                )
        return arr.astype(np.int32)

    def _fail(self, index: int, offset: int, what: str):
        row = int(self.rows[index]) if self.rows is not None else index
        mm, line = self._map(), 1
        for a in range(0, offset, 1 << 26):  # in chunks: the file may be far larger than memory
            line += mm[a : min(a + (1 << 26), offset)].count(b"\n")
        raise DataError(f"In {self.path}, line {line} (sample {row}, byte offset {offset}) {what}")

    def _map(self) -> mmap.mmap | bytes:
        return _open_map(self.path, self._size)

    def __repr__(self) -> str:
        return f"BinSource({self.path!r}, samples={len(self)}, type_id={self.type_id})"


_REBUILD = ". Re-create the file with tools/tokenizer.py, or remove it from the data folder."

# Open memory maps, shared by all sources and threads of this process. Bounded, because a dataset can
# have more .bin files than the process may open; an evicted map closes once no reader holds it.
_MAX_OPEN_MAPS = 256
_maps: OrderedDict[tuple[str, int], mmap.mmap | bytes] = OrderedDict()
_maps_lock = threading.Lock()


def _open_map(path: str, size: int) -> mmap.mmap | bytes:
    key = (path, size)
    with _maps_lock:
        mm = _maps.get(key)
        if mm is not None:
            _maps.move_to_end(key)
            return mm
        if size == 0:
            mm = b""  # an empty file cannot be mapped
        else:
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        _maps[key] = mm
        while len(_maps) > _MAX_OPEN_MAPS:
            _maps.popitem(last=False)
        return mm


def dataset_type_ids(folder: str | os.PathLike) -> dict[str, int]:
    """InternEvo's dataset type ids: every entry of `folder` (files too), sorted, numbered from 0."""
    return {name: i for i, name in enumerate(sorted(os.listdir(folder)))}


def find_bin_files(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """Every `*.bin` under `folder` in InternEvo's order (sorted walk), with its dataset type id.

    The type id is the index of the file's top-level subfolder in `dataset_type_ids(folder)`.
    Raises DataError for a missing folder, a folder without `.bin` files, and `.bin` files whose
    type cannot be told (placed directly in `folder`, as InternEvo requires a type subfolder).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(
            f"The data folder {folder} does not exist (or is not a folder). Set data.train_folder / "
            f"data.valid_folder to a folder holding <type>/*.bin files (types such as en, cn, code), "
            f"or set train_folder=None to train on mock data."
        )
    type_map = dataset_type_ids(folder)
    found: list[tuple[str, int]] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for fn in sorted(files):
            if not fn.endswith(".bin"):
                continue
            path = os.path.join(root, fn)
            top = os.path.relpath(path, folder).split(os.sep)[0]
            # InternEvo matches "/[z_]*<name>/" in the path; for a normal layout that is the top folder.
            type_id = type_map.get(top) if top != fn else None
            if type_id is None:
                raise DataError(
                    f"Cannot tell the dataset type of {path}: InternEvo takes it from the top-level subfolder "
                    f"of {folder} (e.g. {folder}/en/{fn} is type 'en'). Move the file into a type subfolder "
                    f"such as en/, cn/ or code/."
                )
            found.append((path, type_id))
    if not found:
        raise DataError(
            f"The data folder {folder} contains no .bin files. Tokenize text into it with "
            f"`python tools/tokenizer.py --text_input_path IN.txt --bin_output_path {folder}/en/IN.bin`, "
            f"or point the setting at the folder that holds the <type>/*.bin files."
        )
    return found


def file_min_length(path: str, min_length: int, min_length_dict: dict[str, int] | None) -> int:
    """The min_length of one `.bin` file: `min_length_dict[k]` for the key k found in its path, else min_length.

    As InternEvo's get_packed_dataset_without_short_length: a key matches when it is a substring of
    the joined walk path; a path matched by two or more keys is an error.
    """
    if not min_length_dict:
        return min_length
    matched = [k for k in min_length_dict if k in path]
    if len(matched) > 1:
        raise DataError(
            f"The file name `{path}` matched the following keys of data.min_length_dict: {matched}. Each "
            f".bin path may contain at most one key, so that its minimum sample length is unambiguous; "
            f"make the keys distinct substrings (e.g. a folder name with its slashes, '/arxiv/'), or move "
            f"the file."
        )
    return int(min_length_dict[matched[0]]) if matched else min_length


def load_bin_folder(
    folder: str | os.PathLike,
    *,
    min_length: int = 0,
    vocab_size: int | None = None,
    min_length_dict: dict[str, int] | None = None,
) -> list[BinSource]:
    """A `BinSource` per `.bin` file under `folder` (sorted walk), skipping files left empty by min_length.

    min_length_dict ({path substring: min_length}) overrides min_length per file (`file_min_length`).
    """
    sources = []
    for path, type_id in find_bin_files(folder):
        limit = file_min_length(path, min_length, min_length_dict)
        src = BinSource(path, type_id=type_id, min_length=limit, vocab_size=vocab_size)
        if len(src):
            sources.append(src)
    if not sources:
        per_file = " (or the data.min_length_dict value its file's path matches)" if min_length_dict else ""
        raise DataError(
            f"No sample under {folder} has at least data.min_length={min_length}{per_file} tokens. Lower "
            f"{'these limits' if min_length_dict else 'data.min_length'} or add longer samples."
        )
    return sources
