"""Training and validation batches from the `data` config, as InternEvo builds them.

`build_train_loader` returns a `TrainLoader` whose `get_batch(step)` is a pure function of the
step: the loader's whole position is the step counter, so resuming is `restore({"step": s})`.
A batch is a dict of int32 arrays [micro_num, rows, packed_length] where row j is the pack of
data-parallel rank `dp_ranks[j]`.

`data.type = "streaming"` (or "hf", InternEvo's earlier name for it) gives a `StreamingTrainLoader`
instead (data/streaming.py): the same interface over raw text tokenized on the fly. With
`data.num_worker > 0`, iterating a TrainLoader builds the batches in grain worker processes
(data/workers.py).

`build_valid_loaders` returns one `ValidSet` per folder of `valid_folder` holding `.bin` files:
no shuffle, samples cut to seq_len and padded, `micro_bsz` samples side by side in a row, as
InternEvo's validation (which runs [micro_bsz, seq_len] micro-batches).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from internevo_jax.data.binmeta import BinSource, load_bin_folder
from internevo_jax.data.errors import DataError
from internevo_jax.data.mock import TRAIN_MOCK_SAMPLES, VALID_MOCK_SAMPLES_PER_RANK, MockSource
from internevo_jax.data.packing import PACK_KEYS, ConcatDataset, PackedDataset, fill_rows
from internevo_jax.data.sampler import BatchSchedule, BatchSkipper, changed_settings
from internevo_jax.data.streaming import STREAMING_TYPES, StreamingTrainLoader, build_streaming_loader
from internevo_jax.data.workers import GrainBatches, import_grain

logger = logging.getLogger(__name__)

VALID_MIN_LENGTH = 50  # InternEvo's validation JsonlDataset keeps its default min_length=50
SUPPORTED_TYPES = ("tokenized", *STREAMING_TYPES)

# Every setting is read from its typed field of config.schema.DataConfig, which holds the defaults
# (InternEvo's); derived fields (packed_length, valid_micro_num, seed) are filled when a Config loads.


def _check_type(data) -> str:
    kind = data.type
    if kind not in SUPPORTED_TYPES:
        raise DataError(
            f"data.type={kind!r} is not supported; use 'tokenized' (.bin/.bin.meta from tools/tokenizer.py, "
            f"or mock data with train_folder=None) or 'streaming' (raw text tokenized on the fly with "
            f"data.tokenizer_path; 'hf' is read the same way)."
        )
    return kind


def _vocab_size(cfg, vocab_size: int | None) -> int:
    if vocab_size is not None:
        return int(vocab_size)
    return int(cfg.model.vocab_size)


class BatchBuilder:
    """`builder(step)` is the batch of `step`: the pure part of TrainLoader, picklable for worker processes."""

    def __init__(
        self, packs: ConcatDataset, schedule: BatchSchedule, dp_ranks: Sequence[int], packed_length: int
    ):
        self.packs, self.schedule = packs, schedule
        self.dp_ranks, self.packed_length = list(dp_ranks), int(packed_length)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rows = [self.schedule.pack_indices(step, r) for r in self.dp_ranks]
        micro = len(rows[0])
        out = {k: np.empty((micro, len(rows), self.packed_length), dtype=np.int32) for k in PACK_KEYS}
        for j, idx in enumerate(rows):
            for m, i in enumerate(idx):
                pack = self.packs[int(i)]
                for k in PACK_KEYS:
                    out[k][m, j] = pack[k]
        return out


class TrainLoader:
    """Deterministic training batches; see the module docstring. Iterating yields (step, batch)."""

    type = "tokenized"

    def __init__(
        self,
        packs: ConcatDataset,
        schedule: BatchSchedule,
        *,
        dp_ranks: Sequence[int],
        packed_length: int,
        skip_batches: str = "",
        total_steps: int | None = None,
        num_workers: int = 0,
        summary: dict | None = None,
    ):
        self.packs = packs
        self.schedule = schedule
        self.dp_ranks = [int(r) for r in dp_ranks]
        for r in self.dp_ranks:
            if not 0 <= r < schedule.dp_size:
                raise ValueError(f"dp rank {r} out of range for data-parallel size {schedule.dp_size}")
        self.packed_length = int(packed_length)
        self.skipper = BatchSkipper(skip_batches)
        self.total_steps = int(total_steps) if total_steps else None
        self.num_workers = int(num_workers)
        self.summary = summary or {}
        self._position = 0
        self._builder = BatchBuilder(packs, schedule, self.dp_ranks, self.packed_length)
        self._workers: set[GrainBatches] = set()

    # -- pure, step-indexed access ------------------------------------------------------------
    def get_batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of `step`: int32 arrays [micro_num_at(step), len(dp_ranks), packed_length]."""
        return self._builder(step)

    def micro_num_at(self, step: int) -> int:
        """Micro-batches in `step` (below data.micro_num only while rampup_batch_size ramps)."""
        return self.schedule.micro_num_at(step)

    def should_skip(self, step: int) -> bool:
        """True when `step` is listed in data.skip_batches: load it, but do not train on it."""
        return self.skipper(step)

    def epoch_at(self, step: int) -> int:
        """The data epoch `step` reads from (0-based)."""
        return self.schedule.locate(step).epoch

    @property
    def num_packs(self) -> int:
        return len(self.packs)

    # -- position: a step counter --------------------------------------------------------------
    @property
    def position(self) -> int:
        """The next step iteration yields."""
        return self._position

    def state(self) -> dict:
        """JSON-able loader state: the next step, plus the settings it is only valid under."""
        return {"step": self._position, **self.schedule.fingerprint()}

    def restore(self, state: dict, *, strict: bool = True) -> None:
        """Continue at `state["step"]`; with strict, refuse a state saved under other data settings."""
        changed_settings(
            state, self.schedule.fingerprint(), what="data position", strict=strict, restart="order"
        )
        self._position = int(state["step"])

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (step, batch) from the current position up to data.total_steps (forever if unset).

        With num_workers > 0 the batches are built in that many grain worker processes (or, where
        grain cannot be imported, on that many threads, with a warning saying why).
        """
        start = self._position
        stop = self.total_steps
        if self.num_workers <= 0:
            step = start
            while stop is None or step < stop:
                batch = self.get_batch(step)
                self._position = step + 1
                yield step, batch
                step += 1
            return
        grain, why = import_grain()
        if grain is not None:
            yield from self._iter_processes(grain, start, stop)
        else:
            logger.warning(
                "data.num_worker=%d: grain cannot be imported (%s), so batches are built on %d threads of "
                "this process instead of worker processes.",
                self.num_workers,
                why,
                self.num_workers,
            )
            yield from self._iter_threads(start, stop)

    def _iter_processes(self, grain, start: int, stop: int | None):
        workers = GrainBatches(grain, self._builder, start, stop, self.num_workers)
        self._workers.add(workers)
        try:
            for step, batch in workers:
                self._position = step + 1
                yield step, batch
        finally:
            workers.close()
            self._workers.discard(workers)

    def close(self) -> None:
        """Stop the worker processes of any unfinished iteration (also done when it is garbage collected)."""
        for workers in list(self._workers):
            workers.close()
        self._workers.clear()

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _iter_threads(self, start: int, stop: int | None):
        # get_batch is pure, so batches can be built ahead on threads in any order.
        depth = 2 * self.num_workers
        with ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="data") as pool:
            pending = {}
            step = start
            try:
                while stop is None or step < stop:
                    last = step + depth if stop is None else min(step + depth, stop)
                    for s in range(step, last):
                        if s not in pending:
                            pending[s] = pool.submit(self.get_batch, s)
                    batch = pending.pop(step).result()
                    self._position = step + 1
                    yield step, batch
                    step += 1
            finally:
                for f in pending.values():
                    f.cancel()

    def as_grain_dataset(self):
        """The packs as a `grain.MapDataset` (for grain pipelines; batching stays in get_batch)."""
        import grain  # imported here: the tokenizer tools should not pay for grain's import

        return grain.MapDataset.source(self.packs)


def _train_sources(cfg, vocab_size: int) -> list:
    data = cfg.data
    if data.train_folder is None:
        return [
            MockSource(
                TRAIN_MOCK_SAMPLES, data.seq_len, vocab_size, fixed_seqlen=data.fixed_random_dataset_seqlen
            )
        ]
    # InternEvo applies min_length_dict to the training folder only.
    return load_bin_folder(
        data.train_folder,
        min_length=data.min_length,
        vocab_size=vocab_size,
        min_length_dict=data.min_length_dict,
    )


def build_train_loader(
    cfg, *, dp_size: int, dp_ranks: Iterable[int], vocab_size: int | None = None
) -> TrainLoader | StreamingTrainLoader:
    """Build the training loader from `cfg.data` (see the module docstring).

    dp_size: the data-parallel size (ranks that each read their own packs); dp_ranks: the ranks
    this process feeds, one batch row each. vocab_size defaults to cfg.model.vocab_size.
    data.type "streaming" or "hf" gives a StreamingTrainLoader (same interface; see data/streaming.py).
    data.use_packed_dataset=False puts one sample per seq_len row of each pack (`packing.fill_rows`).
    """
    data = cfg.data
    kind = _check_type(data)
    vocab = _vocab_size(cfg, vocab_size)
    if kind in STREAMING_TYPES:
        return build_streaming_loader(cfg, dp_size=int(dp_size), dp_ranks=list(dp_ranks), vocab_size=vocab)
    seq_len, micro_bsz = data.seq_len, data.micro_bsz
    packed_length = seq_len * micro_bsz  # InternEvo forces this, whatever data.packed_length says
    into_one = data.pack_sample_into_one
    unpacked = not data.use_packed_dataset
    sources = _train_sources(cfg, vocab)
    packed = [
        PackedDataset(
            s, seq_len=seq_len, packed_length=packed_length, pack_sample_into_one=into_one, unpacked=unpacked
        )
        for s in sources
    ]
    packs = ConcatDataset(packed)
    summary = {
        "files": len(sources),
        "samples": int(sum(len(s) for s in sources)),
        "tokens": int(sum(s.num_tokens for s in sources)),
        "packs": len(packs),
        "dropped_by_min_length": int(sum(getattr(s, "num_unfiltered", len(s)) - len(s) for s in sources)),
        "unpacked": unpacked and not into_one,
    }
    logger.info(
        "train data: %d files, %d samples, %d tokens -> %d packs of %d tokens",
        summary["files"],
        summary["samples"],
        summary["tokens"],
        summary["packs"],
        packed_length,
    )
    schedule = BatchSchedule(
        len(packs),
        micro_num=data.micro_num,
        dp_size=int(dp_size),
        seed=data.seed,
        rampup_batch_size=data.rampup_batch_size or "",
    )
    return TrainLoader(
        packs,
        schedule,
        dp_ranks=list(dp_ranks),
        packed_length=packed_length,
        skip_batches=data.skip_batches or "",
        total_steps=data.total_steps,
        num_workers=data.num_worker,
        summary=summary,
    )


class ValidSet:
    """One validation set: `len()` batches, each [micro_num, len(dp_ranks), packed_length] int32.

    Rank r reads samples r, r + dp, r + 2*dp, ... (InternEvo's DataParallelSampler without shuffle);
    a batch holds micro_num * micro_bsz of them; an incomplete last batch is dropped.
    """

    def __init__(
        self,
        name: str,
        samples,
        *,
        seq_len: int,
        micro_bsz: int,
        valid_micro_num: int,
        dp_size: int,
        dp_ranks,
    ):
        self.name = name
        self.samples = samples
        self.seq_len, self.micro_bsz, self.dp_size = int(seq_len), int(micro_bsz), int(dp_size)
        self.dp_ranks = [int(r) for r in dp_ranks]
        per_rank = len(samples) // self.dp_size
        batch = min(int(valid_micro_num) * self.micro_bsz, per_rank) // self.micro_bsz * self.micro_bsz
        self.batch_samples = batch
        self.micro_num = batch // self.micro_bsz
        self.num_batches = per_rank // batch if batch else 0

    def __len__(self) -> int:
        return self.num_batches

    def get_batch(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"validation batch {index} out of range for {self.name!r} ({self.num_batches})")
        S, B = self.seq_len, self.micro_bsz
        shape = (self.micro_num, len(self.dp_ranks), S * B)
        out = {k: np.empty(shape, np.int32) for k in PACK_KEYS}
        for j, rank in enumerate(self.dp_ranks):
            for m in range(self.micro_num):
                first = index * self.batch_samples + m * B
                samples = [self.samples[(first + slot) * self.dp_size + rank] for slot in range(B)]
                # Validation types are all 0, as InternEvo's validation batches carry none.
                pack = fill_rows(samples, seq_len=S, rows=B, type_id=0)
                for k in PACK_KEYS:
                    out[k][m, j] = pack[k]
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.num_batches):
            yield self.get_batch(i)


def _valid_sample_sets(folder: str, vocab_size: int) -> dict[str, ConcatDataset]:
    if not os.path.isdir(folder):
        raise DataError(
            f"The validation folder {folder} does not exist (or is not a folder). Set data.valid_folder to a "
            f"folder whose subfolders hold .bin files (one validation set per subfolder), or to None."
        )
    sets: dict[str, ConcatDataset] = {}
    where: dict[str, str] = {}
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        bins = [os.path.join(root, f) for f in sorted(files) if f.endswith(".bin")]
        if not bins:
            continue
        name = os.path.basename(root.rstrip(os.sep))
        if name in sets:
            raise DataError(
                f"Two validation folders are both named {name!r} ({where[name]} and {root}); sets are named "
                f"after their folder, so rename one of them."
            )
        sources = [BinSource(p, min_length=VALID_MIN_LENGTH, vocab_size=vocab_size) for p in bins]
        sets[name], where[name] = ConcatDataset(sources), root
    if not sets:
        raise DataError(
            f"The validation folder {folder} contains no .bin files. Put tokenized data in subfolders of it "
            f"(one set per subfolder), or set data.valid_folder=None."
        )
    return sets


def build_valid_loaders(
    cfg, *, dp_size: int, dp_ranks: Iterable[int], vocab_size: int | None = None
) -> dict[str, ValidSet]:
    """One ValidSet per folder under data.valid_folder that holds .bin files, named after the folder.

    Without valid_folder, InternEvo validates on mock data: one set "val" of 500 samples per rank.
    Sets too small to fill one batch per rank are left out (and logged).
    """
    data = cfg.data
    _check_type(data)
    vocab = _vocab_size(cfg, vocab_size)
    seq_len, micro_bsz = data.seq_len, data.micro_bsz
    if not data.valid_folder:
        fixed = data.fixed_random_dataset_seqlen
        sample_sets = {"val": MockSource(int(dp_size) * VALID_MOCK_SAMPLES_PER_RANK, seq_len, vocab, fixed)}
    else:
        sample_sets = _valid_sample_sets(data.valid_folder, vocab)
    ranks = list(dp_ranks)
    out = {}
    for name, samples in sample_sets.items():
        vs = ValidSet(
            name,
            samples,
            seq_len=seq_len,
            micro_bsz=micro_bsz,
            valid_micro_num=data.valid_micro_num,
            dp_size=dp_size,
            dp_ranks=ranks,
        )
        if len(vs) == 0:
            logger.info("skip validation set %r: %d samples are too few for one batch", name, len(samples))
            continue
        out[name] = vs
    return out
