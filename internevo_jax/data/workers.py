"""Batches built in grain worker processes (`data.num_worker > 0`), off the training process's threads.

The pipeline is `grain.MapDataset.range(start, stop)` (the steps) -> map(step -> (step, batch)) ->
`to_iter_dataset(ReadOptions(1 thread, WORKER_PREFETCH buffered))` ->
`mp_prefetch(MultiprocessingOptions(num_workers))`: worker w builds steps start + w, start + w + n, ...
and grain interleaves them back into step order. The batch of a step is a pure function of the step,
so the batches equal `get_batch(step)` and the number of workers never changes them; resuming is
starting the range at the saved step.

grain's workers are spawned processes that receive the pipeline pickled, so the batch builder must
pickle (the data sources reopen their files lazily). absl flags must count as parsed before grain
reads its own flags, in this process and in each worker (`mark_absl_flags_parsed`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

WORKER_PREFETCH = 4  # batches each worker builds ahead (grain's per-process read buffer)


def mark_absl_flags_parsed(*_unused) -> None:
    """Let grain read its absl flags without an absl app (it otherwise raises UnparsedFlagAccessError)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def import_grain():
    """grain, or None with the reason logged by the caller (it is missing on some GPU images)."""
    try:
        import grain

        return grain, None
    except ImportError as e:
        return None, f"{type(e).__name__}: {e}"


class _StepBatch:
    """step -> (step, batch), pickled into each worker."""

    def __init__(self, build: Callable[[int], dict]):
        self.build = build

    def __call__(self, step) -> tuple[int, dict]:
        step = int(step)
        return step, self.build(step)


class GrainBatches:
    """Iterate (step, batch) for steps [start, stop) built by `build` in `num_workers` grain processes.

    Use as a context manager or call `close()`: it stops the worker processes.
    """

    def __init__(
        self,
        grain,
        build: Callable[[int], dict],
        start: int,
        stop: int | None,
        num_workers: int,
        *,
        read_threads: int = 1,
        prefetch: int = WORKER_PREFETCH,
    ):
        mark_absl_flags_parsed()
        steps = grain.MapDataset.range(int(start), sys.maxsize if stop is None else int(stop))
        # Inside a worker, one thread builds the steps and keeps a few ready: grain's default ReadOptions
        # (16 threads, 500 elements buffered per worker) would hold hundreds of batches per worker.
        read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
        ds = steps.map(_StepBatch(build)).to_iter_dataset(read)
        # Batches travel pickled, not in shared memory: grain does not free the shared memory of batches
        # still in flight when an iteration stops early (it lingers until exit), and copying a batch
        # costs little next to a training step.
        ds = grain.experimental.WithOptionsIterDataset(
            ds, grain.experimental.DatasetOptions(min_shm_size=1 << 62)
        )
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=int(num_workers)), worker_init_fn=mark_absl_flags_parsed
        )
        self._it = iter(ds)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        yield from self._it

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        it, self._it = self._it, None
        if it is not None:
            it.close()

    def __enter__(self) -> GrainBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
