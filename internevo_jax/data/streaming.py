"""`data.type = "streaming"` (or InternEvo's older name "hf"): raw text read in order, tokenized on the
fly, packed, resumable by step.

As InternEvo's streaming dataset: records are read in file order without shuffling, data-parallel rank
r takes records r, r + dp, r + 2*dp, ... (InternEvo's split_dataset_by_node), and each step takes the
next `micro_num_at(step)` packs of every rank's stream. Each record's text (its "text" field, as
InternEvo's streaming dataset reads it: `textsource.RecordText.FIELD`) becomes
`[bos] + ids + [eos]`, as tools/tokenizer.py writes it, and the packs follow the tokenized path's rules
(`packing.fill_pack`): samples are concatenated and cut into full packs of packed_length tokens, a
sample cut at a pack end continues in the next pack. When the files run out, the next epoch reads them
again from the start, in the same order.

A rank's position is a `Cursor` (epoch, file, position in the file, record number, tokens of that
record already packed): resuming from a cursor re-reads one record, nothing before it. The loader
remembers the cursor after every few packs, so `get_batch(step)` stays a function of the step (a step
far from any remembered cursor is reached by reading forward); `state()` holds this process's cursors,
and `restore(state)` puts them back so the next batch is read directly.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from internevo_jax.data.errors import DataError
from internevo_jax.data.packing import PACK_KEYS, fill_pack
from internevo_jax.data.sampler import BatchSkipper, changed_settings, parse_rampup
from internevo_jax.data.textsource import DEFAULT_TEXT_FIELD, open_text_files
from internevo_jax.data.tokenizer import Tokenizer, sentencepiece_path, vocab_mismatch

logger = logging.getLogger(__name__)

STREAMING_TYPE_NAMES = ["en"]  # InternEvo names the streaming data's one type "en"
STREAMING_TYPES = ("streaming", "hf")  # "hf": InternEvo's earlier name of its Hugging Face streaming data
ENCODE_BATCH = 64  # records tokenized per sentencepiece call
MEMO_EVERY = 64  # remember a rank's cursor every this many packs


@dataclass(frozen=True)
class Cursor:
    """Where a rank's stream stands: record `record` of epoch `epoch` at `pos` of file `file`,
    whose first `offset` tokens are already packed."""

    epoch: int = 0
    file: int = 0
    pos: int = 0
    record: int = 0
    offset: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Cursor:
        return cls(**{k: int(d[k]) for k in ("epoch", "file", "pos", "record", "offset")})


def rank_records(files: Sequence, cursor: Cursor, rank: int, dp_size: int) -> Iterator[tuple]:
    """(file, raw record, its position, start Cursor, end Cursor) of `rank`'s records from `cursor`, forever."""
    epoch, fi, pos, rec = cursor.epoch, cursor.file, cursor.pos, cursor.record
    while True:
        from_start = fi == 0 and pos == files[0].start and rec == 0
        for f in range(fi, len(files)):
            reader = files[f]
            for row, nxt, raw in reader.scan(pos if f == fi else reader.start):
                if rec % dp_size == rank:
                    yield reader, raw, row, Cursor(epoch, f, row, rec, 0), Cursor(epoch, f, nxt, rec + 1, 0)
                rec += 1
        if from_start and rec <= rank:
            names = ", ".join(getattr(r, "path", "?") for r in files[:3])
            raise DataError(
                f"The streaming data ({names}{', ...' if len(files) > 3 else ''}) holds {rec} records, fewer "
                f"than the {dp_size} data-parallel ranks that each read every {dp_size}-th record, so rank "
                f"{rank} gets none. Add data or use fewer data-parallel ranks."
            )
        epoch, fi, pos, rec = epoch + 1, 0, files[0].start, 0


class StreamPacker:
    """Packs of one rank's stream: `packs(cursor)` yields (pack, cursor after it), forever."""

    def __init__(
        self,
        files: Sequence,
        tokenizer: Tokenizer,
        *,
        rank: int,
        dp_size: int,
        seq_len: int,
        packed_length: int,
        pack_sample_into_one: bool,
        threads: int = 1,
    ):
        self.files, self.tokenizer = files, tokenizer
        self.rank, self.dp_size = int(rank), int(dp_size)
        self.seq_len, self.packed_length = int(seq_len), int(packed_length)
        self.pack_sample_into_one = bool(pack_sample_into_one)
        self.threads = max(int(threads), 1)

    def samples(self, cursor: Cursor) -> Iterator[tuple[np.ndarray, Cursor, Cursor]]:
        """(tokens, start Cursor, end Cursor) of the rank's records from `cursor`, tokenized in batches."""
        batch: list = []
        for reader, raw, row, start, end in rank_records(self.files, cursor, self.rank, self.dp_size):
            batch.append((reader.text(raw, row), start, end))
            if len(batch) == ENCODE_BATCH:
                yield from self._encode(batch)
                batch = []

    def _encode(self, batch: list) -> Iterator[tuple[np.ndarray, Cursor, Cursor]]:
        if not batch:
            return
        tok = self.tokenizer
        ids = tok.sp.encode([t for t, _, _ in batch], num_threads=self.threads)
        for (_, start, end), body in zip(batch, ids):
            yield np.array([tok.bos_id, *body, tok.eos_id], dtype=np.int32), start, end

    def packs(self, cursor: Cursor) -> Iterator[tuple[dict[str, np.ndarray], Cursor]]:
        """Full packs from `cursor` on, each with the cursor that resumes right after it."""
        L = self.packed_length
        records = self.samples(replace(cursor, offset=0))
        pending: deque = deque()
        offset, last_end = cursor.offset, cursor
        while True:
            fragments, need = [], L
            while need:
                if not pending:
                    pending.append(next(records))
                tokens, _, end = pending[0]
                a = offset
                b = min(len(tokens), a + need)
                fragments.append((tokens, a, b))
                need -= b - a
                if b == len(tokens):
                    pending.popleft()
                    offset, last_end = 0, end
                else:
                    offset = b
            after = replace(pending[0][1], offset=offset) if pending else last_end
            pack = fill_pack(
                fragments,
                seq_len=self.seq_len,
                packed_length=L,
                pack_sample_into_one=self.pack_sample_into_one,
                type_id=0,
            )
            yield pack, after


class RankPacks:
    """Pack k of one rank's stream by index: continues the open stream, or resumes from a remembered cursor."""

    def __init__(self, packer: StreamPacker):
        self.packer = packer
        self.memo: dict[int, Cursor] = {0: Cursor()}
        self._lock = threading.Lock()
        self._it: Iterator | None = None
        self._next = 0
        self._latest: int | None = None

    def get(self, first: int, count: int) -> list[dict[str, np.ndarray]]:
        """Packs [first, first + count) of the stream."""
        with self._lock:
            self._seek(first)
            out = []
            for _ in range(count):
                pack, after = next(self._it)
                out.append(pack)
                self._next += 1
                self._remember(self._next, after)
            return out

    def cursor_at(self, index: int) -> Cursor:
        """The cursor before pack `index` (read forward to it if it is not remembered)."""
        with self._lock:
            if index not in self.memo:
                self._seek(index)
            return self.memo[index]

    def seed(self, index: int, cursor: Cursor) -> None:
        """Remember a cursor known from a saved state."""
        with self._lock:
            self.memo[int(index)] = cursor

    def _seek(self, index: int) -> None:
        open_ok = self._it is not None and self._next <= index
        start = max(k for k in self.memo if k <= index)
        if not open_ok or start > self._next:  # restart from the closest remembered cursor
            self._it, self._next = self.packer.packs(self.memo[start]), start
        while self._next < index:
            _, after = next(self._it)
            self._next += 1
            self._remember(self._next, after)

    def _remember(self, index: int, cursor: Cursor) -> None:
        # Sparse, plus the latest: enough to resume anywhere by reading at most MEMO_EVERY packs.
        latest = self._latest
        if latest is not None and latest != index and latest % MEMO_EVERY and latest in self.memo:
            del self.memo[latest]
        self.memo[index] = cursor
        self._latest = index


class StreamingTrainLoader:
    """Training batches from streamed text, with TrainLoader's interface (get_batch, state, restore, ...)."""

    type = "streaming"

    def __init__(
        self,
        files: Sequence,
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        micro_bsz: int,
        micro_num: int,
        dp_size: int,
        dp_ranks: Sequence[int],
        pack_sample_into_one: bool = False,
        rampup_batch_size: str = "",
        skip_batches: str = "",
        total_steps: int | None = None,
        num_workers: int = 0,
        summary: dict | None = None,
    ):
        self.files = list(files)
        self.packed_length = int(seq_len) * int(micro_bsz)
        self.micro_num, self.dp_size = int(micro_num), int(dp_size)
        self.dp_ranks = [int(r) for r in dp_ranks]
        for r in self.dp_ranks:
            if not 0 <= r < self.dp_size:
                raise ValueError(f"dp rank {r} out of range for data-parallel size {self.dp_size}")
        self.rampup_spec = rampup_batch_size or ""
        self.rampup = parse_rampup(rampup_batch_size, self.micro_num)
        self.skipper = BatchSkipper(skip_batches)
        self.total_steps = int(total_steps) if total_steps else None
        self.num_workers = int(num_workers)
        self.summary = summary or {}
        self.ranks = {
            r: RankPacks(
                StreamPacker(
                    self.files,
                    tokenizer,
                    rank=r,
                    dp_size=self.dp_size,
                    seq_len=seq_len,
                    packed_length=self.packed_length,
                    pack_sample_into_one=pack_sample_into_one,
                    threads=max(self.num_workers, 1),
                )
            )
            for r in self.dp_ranks
        }
        B, ramp = self.micro_num, self.rampup
        self._full_from = 0 if ramp.start >= B else -(-(B - ramp.start) // ramp.incr) * ramp.every
        self._ramp_packs = sum(ramp.micro_num(t, B) for t in range(self._full_from))
        self._position = 0
        self._stop: threading.Event | None = None

    # -- step-indexed access ------------------------------------------------------------------
    def micro_num_at(self, step: int) -> int:
        """Packs per rank in `step` (below data.micro_num only while rampup_batch_size ramps)."""
        return self.rampup.micro_num(step, self.micro_num)

    def packs_before(self, step: int) -> int:
        """Packs each rank's stream has delivered before `step`."""
        if step <= self._full_from:
            return sum(self.micro_num_at(t) for t in range(step))
        return self._ramp_packs + (step - self._full_from) * self.micro_num

    def get_batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of `step`: int32 arrays [micro_num_at(step), len(dp_ranks), packed_length]."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        first, micro = self.packs_before(step), self.micro_num_at(step)
        shape = (micro, len(self.dp_ranks), self.packed_length)
        out = {k: np.empty(shape, dtype=np.int32) for k in PACK_KEYS}
        for j, rank in enumerate(self.dp_ranks):
            for m, pack in enumerate(self.ranks[rank].get(first, micro)):
                for k in PACK_KEYS:
                    out[k][m, j] = pack[k]
        return out

    def should_skip(self, step: int) -> bool:
        """True when `step` is listed in data.skip_batches: load it, but do not train on it."""
        return self.skipper(step)

    def epoch_at(self, step: int) -> int:
        """The pass over the files that `step` starts in (0-based), for the first local rank."""
        return self.ranks[self.dp_ranks[0]].cursor_at(self.packs_before(step)).epoch

    num_packs = None  # a stream has no fixed number of packs

    # -- position -----------------------------------------------------------------------------
    @property
    def position(self) -> int:
        """The next step iteration yields."""
        return self._position

    def fingerprint(self) -> dict:
        """The settings a resumed run must share for its step counter to mean the same data."""
        return {
            "type": "streaming",
            "micro_num": self.micro_num,
            "dp_size": self.dp_size,
            "packed_length": self.packed_length,
            "rampup_batch_size": self.rampup_spec,
            "num_files": len(self.files),
        }

    def state(self) -> dict:
        """JSON-able state: the next step, the settings, and this process's cursors at that step."""
        first = self.packs_before(self._position)
        cursors = {str(r): self.ranks[r].cursor_at(first).to_dict() for r in self.dp_ranks}
        return {"step": self._position, **self.fingerprint(), "pack": first, "cursors": cursors}

    def restore(self, state: dict, *, strict: bool = True) -> None:
        """Continue at `state["step"]`; cursors saved for this process's ranks make that immediate.

        With strict, a state saved under other data settings is refused (DataError). With
        strict=False it is accepted and the stream is read forward to that step of the new layout.
        """
        changed = changed_settings(
            state, self.fingerprint(), what="streaming data position", strict=strict, restart="layout"
        )
        self._position = int(state["step"])
        if any(k in changed for k in ("dp_size", "num_files", "packed_length")):
            return  # cursors of another split, other files or other pack sizes mean nothing here
        for rank, cursor in (state.get("cursors") or {}).items():
            if int(rank) in self.ranks:
                self.ranks[int(rank)].seed(int(state["pack"]), Cursor.from_dict(cursor))

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (step, batch) from the current position up to data.total_steps (forever if unset).

        With data.num_worker > 0 the next batches are read, tokenized and packed on a background
        thread (sentencepiece releases the GIL and encodes on num_worker threads); a stream is read in
        order, so one thread feeds it.
        """
        stop = self.total_steps
        if self.num_workers <= 0:
            step = self._position
            while stop is None or step < stop:
                batch = self.get_batch(step)
                self._position = step + 1
                yield step, batch
                step += 1
            return
        for step, batch in _background(self.get_batch, self._position, stop, depth=2):
            self._position = step + 1
            yield step, batch

    def close(self) -> None:
        """Nothing to release: a background thread ends with its iteration."""


def _background(fn, start: int, stop: int | None, depth: int):
    """Yield (step, fn(step)) for steps from `start`, computed ahead on one daemon thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = threading.Event()

    def work():
        step = start
        try:
            while (stop is None or step < stop) and not done.is_set():
                item = (step, fn(step))
                while not done.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                step += 1
            q.put(None)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=work, name="streaming-data", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        done.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _tokenizer_file(path: str | None, kind: str = "streaming") -> str:
    if not path:
        raise DataError(
            f"data.type={kind!r} tokenizes text on the fly and needs data.tokenizer_path: the model's "
            "sentencepiece tokenizer (a .model file, or a folder holding tokenizer.model)."
        )
    found = sentencepiece_path(path)
    if found is not None:
        return found
    if os.path.isdir(path):  # InternEvo passes a Hugging Face model folder
        models = sorted(f for f in os.listdir(path) if f.endswith(".model"))
        several = f" (it holds several: {models})" if models else ""
        raise DataError(
            f"data.tokenizer_path={path} is a folder without tokenizer.model{several}. Streaming data is tokenized "
            f"with the model's sentencepiece model, which Hugging Face folders of InternLM / Llama models ship as "
            f"tokenizer.model (a tokenizer.json alone cannot be read); point tokenizer_path at that file."
        )
    raise DataError(
        f"data.tokenizer_path={path} does not exist; set it to the model's sentencepiece tokenizer "
        f"(a .model file, or a local folder holding tokenizer.model: Hugging Face hub names are not "
        f"downloaded, fetch the model folder first, e.g. `huggingface-cli download NAME --local-dir DIR`)."
    )


def _check_settings(data, kind: str) -> None:
    """Refuse settings InternEvo's streaming data has no counterpart for, and sources that are not local."""
    if not data.use_packed_dataset:
        raise DataError(
            f"data.use_packed_dataset=False is not supported with data.type={kind!r}: streamed samples are "
            f"always packed (InternEvo unpacks only tokenized .bin data). Remove use_packed_dataset or set it to "
            f"True; packs keep samples apart with segment ids, so attention never crosses two samples."
        )
    if not data.train_folder:
        raise DataError(
            f"data.type={kind!r} reads raw text from data.train_folder (a .jsonl file, a folder of .jsonl / "
            ".parquet / .arrow files, or a datasets save_to_disk folder); it is not set."
        )
    if not os.path.exists(data.train_folder):
        name = data.train_folder
        raise DataError(
            f"data.train_folder={name!r} does not exist on this machine. data.type={kind!r} reads local files "
            f"only (a .jsonl file, a folder of .jsonl / .parquet / .arrow files, or a folder written by "
            f"datasets' save_to_disk) and never downloads from the Hugging Face hub. To train on a hub dataset, "
            f'save it once where it can be downloaded, `python -c "import datasets; '
            f"datasets.load_dataset('{name}').save_to_disk('FOLDER')\"`, then set data.train_folder='FOLDER'."
        )


def build_streaming_loader(
    cfg, *, dp_size: int, dp_ranks: Sequence[int], vocab_size: int
) -> StreamingTrainLoader:
    """The streaming training loader for `cfg.data` (type "streaming" or "hf"); see the module docstring."""
    data = cfg.data
    kind = data.type
    _check_settings(data, kind)
    # InternEvo reads the text field "text" and has no config key to change it; neither has the schema.
    field = DEFAULT_TEXT_FIELD
    files = open_text_files(data.train_folder, field=field, subset_name=data.subset_name)
    tokenizer = Tokenizer(_tokenizer_file(data.tokenizer_path, kind))
    problem = vocab_mismatch(tokenizer.vocab_size, vocab_size)
    if problem:
        raise DataError(
            f"The tokenizer {tokenizer.path} {problem}. Set model.vocab_size to at least the tokenizer's "
            "size, or data.tokenizer_path to the tokenizer the model was made for."
        )
    summary = {"type": kind, "files": len(files), "tokenizer": tokenizer.path, "field": field}
    logger.info("%s train data: %d files from %s, field %r", kind, len(files), data.train_folder, field)
    return StreamingTrainLoader(
        files,
        tokenizer,
        seq_len=data.seq_len,
        micro_bsz=data.micro_bsz,
        micro_num=data.micro_num,
        dp_size=dp_size,
        dp_ranks=dp_ranks,
        pack_sample_into_one=data.pack_sample_into_one,
        rampup_batch_size=data.rampup_batch_size or "",
        skip_batches=data.skip_batches or "",
        total_steps=data.total_steps,
        num_workers=data.num_worker,
        summary=summary,
    )
