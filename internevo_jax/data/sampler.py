"""Which packs a step reads: InternEvo's StaticBatchSampler as a pure function of the step.

InternEvo's sampler, for N packs, B = micro_num packs per rank per step and dp ranks:

* an epoch's order is `rng.shuffle(np.arange(N))` with one `np.random.RandomState(seed)` that
  keeps running from epoch to epoch (epoch e uses the e-th shuffle; it is not reseeded);
* the order is cut to a multiple of B*dp (drop_last) and rank r takes every dp-th pack from r;
* each step takes the next `micro_num(step)` packs of the rank's list. With rampup
  "start incr every", micro_num(step) = min(start + (step // every) * incr, B); while the ramp runs,
  the epoch length also reserves the ramp's packs, exactly as InternEvo computes it;
* when a rank's list runs out, the next epoch starts (a new shuffle); the last step of an epoch may
  hold fewer packs only when the ramp does not end on a multiple of B.

`BatchSchedule.locate(step)` gives (epoch, first pack in the rank's list, number of packs) without
iterating over earlier steps: the ramp (if any) is simulated once, after it every epoch is regular.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from internevo_jax.data.errors import DataError


def parse_skip_batches(spec: str | None) -> list[tuple[int, int]]:
    """Parse InternEvo's `skip_batches`, e.g. "100-200,350" -> [(100, 200), (350, 350)] (inclusive, sorted)."""
    if spec is None or str(spec).strip() == "":
        return []
    spans: list[tuple[int, int]] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
            else:
                lo = hi = int(part)
        except ValueError:
            raise DataError(
                f'data.skip_batches={spec!r} is not a list of step ranges: write e.g. "100-200,350" '
                f"(inclusive ranges and single steps, comma separated)."
            ) from None
        if lo < 0 or hi < lo or (spans and lo <= spans[-1][1]):
            raise DataError(
                f"data.skip_batches={spec!r}: range {part!r} is empty, negative or overlaps/precedes the "
                f'one before it. List non-overlapping ranges in increasing order, e.g. "100-200,350".'
            )
        spans.append((lo, hi))
    return spans


class BatchSkipper:
    """`skipper(step)` is True for steps listed in `skip_batches` (loaded, but not trained on)."""

    def __init__(self, spec: str | None):
        self.spans = parse_skip_batches(spec)
        self._starts = [lo for lo, _ in self.spans]

    def __call__(self, step: int) -> bool:
        i = bisect.bisect_right(self._starts, step) - 1
        return i >= 0 and step <= self.spans[i][1]


@dataclass(frozen=True)
class Rampup:
    """InternEvo's `rampup_batch_size="start incr every"` (in packs per rank per step)."""

    start: int
    incr: int
    every: int

    def micro_num(self, step: int, full: int) -> int:
        return min(self.start + (step // self.every) * self.incr, full)


def parse_rampup(spec: str | None, micro_num: int) -> Rampup:
    """Parse `rampup_batch_size`; empty means no ramp (every step takes micro_num packs)."""
    if spec is None or str(spec).strip() == "":
        return Rampup(micro_num, micro_num, 1)
    try:
        start, incr, every = (int(x) for x in str(spec).split())
    except ValueError:
        raise DataError(
            f'data.rampup_batch_size={spec!r} must be three integers "start incr every" (e.g. "2 2 100": '
            f'2 micro-batches at first, 2 more every 100 steps, up to data.micro_num), or "" for no ramp.'
        ) from None
    if start <= 0 or incr <= 0 or every <= 0:
        raise DataError(f"data.rampup_batch_size={spec!r}: start, incr and every must all be positive.")
    return Rampup(start, incr, every)


@dataclass(frozen=True)
class StepSlot:
    """Where a step reads: packs [start, start + size) of each rank's list in epoch `epoch`."""

    epoch: int
    start: int
    size: int


@dataclass
class _Epoch:
    step0: int  # first step of the epoch
    per_rank: int  # packs in each rank's list
    explicit: list  # (start, size) of the ramp steps at the beginning of the epoch
    steady_start: int  # first pack read by the first full-size step
    num_steps: int


class BatchSchedule:
    """InternEvo's StaticBatchSampler for `num_packs` packs, as pure functions of the step."""

    def __init__(
        self, num_packs: int, *, micro_num: int, dp_size: int, seed: int, rampup_batch_size: str = ""
    ):
        self.num_packs = int(num_packs)
        self.micro_num = int(micro_num)
        self.dp_size = int(dp_size)
        self.seed = int(seed)
        self.rampup_spec = rampup_batch_size or ""
        self.rampup = parse_rampup(rampup_batch_size, self.micro_num)
        B, dp, N, ramp = self.micro_num, self.dp_size, self.num_packs, self.rampup
        if N < B * dp:
            raise DataError(
                f"The training data makes only {N} packs of data.packed_length tokens, but one step needs "
                f"micro_num * data-parallel size = {B} * {dp} = {B * dp}. Add data, lower data.micro_num or "
                f"data.micro_bsz / seq_len, or lower data.min_length."
            )
        # InternEvo: ramp_steps full ramp stages, whose packs are reserved in the epoch length.
        self._ramp_steps = (B - ramp.start) // ramp.incr
        self._ramp_packs = sum(
            (i * ramp.incr + ramp.start) * ramp.every for i in range(max(self._ramp_steps, 0))
        )
        # First step from which every step takes B packs.
        self._full_from = 0 if ramp.start >= B else -(-(B - ramp.start) // ramp.incr) * ramp.every
        self._regular_per_rank = N // (B * dp) * B
        self._epochs: list[_Epoch] = []
        step = 0
        while True:  # epochs that start before the ramp ends; all later ones are regular
            if step >= self._full_from and self._epochs:
                break
            ep = self._simulate_epoch(step)
            self._epochs.append(ep)
            step = ep.step0 + ep.num_steps
            if step >= self._full_from:
                break
        self._regular_step0 = step
        self._regular_steps = self._regular_per_rank // B
        self._perm_lock = threading.Lock()
        self._rng_states: list = [np.random.RandomState(self.seed).get_state()]
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        # Picklable for grain's worker processes (spawned): the lock and the permutation cache stay here.
        state = dict(self.__dict__)
        state["_perm_lock"] = None
        state["_perms"] = OrderedDict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._perm_lock = threading.Lock()

    def _epoch_per_rank(self, step0: int) -> int:
        B, dp, N = self.micro_num, self.dp_size, self.num_packs
        if step0 < self._ramp_steps * self.rampup.every:
            R = self._ramp_packs
            if R * dp > N:
                raise DataError(
                    f"data.rampup_batch_size={self.rampup_spec!r} needs {R * dp} packs for the ramp alone but the "
                    f"training data makes only {N}. Shorten the ramp or add data."
                )
            return ((N - R * dp) // (B * dp) * B * dp + R * dp) // dp
        return self._regular_per_rank

    def _simulate_epoch(self, step0: int) -> _Epoch:
        n = self._epoch_per_rank(step0)
        explicit = []
        consumed, step = 0, step0
        while consumed < n and step < self._full_from:
            size = min(self.rampup.micro_num(step, self.micro_num), n - consumed)
            explicit.append((consumed, size))
            consumed += size
            step += 1
        steady = -(-(n - consumed) // self.micro_num)
        return _Epoch(step0, n, explicit, consumed, len(explicit) + steady)

    def locate(self, step: int) -> StepSlot:
        """The epoch and the slice of each rank's pack list that `step` reads."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        B = self.micro_num
        if step < self._regular_step0:
            for e, ep in enumerate(self._epochs):
                if step < ep.step0 + ep.num_steps:
                    k = step - ep.step0
                    if k < len(ep.explicit):
                        return StepSlot(e, *ep.explicit[k])
                    start = ep.steady_start + (k - len(ep.explicit)) * B
                    return StepSlot(e, start, min(B, ep.per_rank - start))
        e, k = divmod(step - self._regular_step0, self._regular_steps)
        return StepSlot(len(self._epochs) + e, k * B, B)

    def micro_num_at(self, step: int) -> int:
        """Packs per rank that `step` reads (less than micro_num only during a ramp)."""
        return self.locate(step).size

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s pack order: the epoch-th shuffle of one RandomState(seed)."""
        with self._perm_lock:
            if epoch in self._perms:
                self._perms.move_to_end(epoch)
                return self._perms[epoch]
            rng = np.random.RandomState()
            known = min(epoch, len(self._rng_states) - 1)
            rng.set_state(self._rng_states[known])
            dtype = np.int32 if self.num_packs < 2**31 else np.int64
            for e in range(known, epoch + 1):
                # The permutation depends only on the RNG and the length, not on the dtype.
                perm = np.arange(self.num_packs, dtype=dtype)
                rng.shuffle(perm)
                if e + 1 == len(self._rng_states):
                    self._rng_states.append(rng.get_state())
            self._perms[epoch] = perm
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
            return perm

    def pack_indices(self, step: int, rank: int) -> np.ndarray:
        """Global pack indices read by data-parallel `rank` at `step`, in micro-batch order."""
        if not 0 <= rank < self.dp_size:
            raise ValueError(f"rank {rank} out of range for data-parallel size {self.dp_size}")
        slot = self.locate(step)
        perm = self.permutation(slot.epoch)
        idx = (np.arange(slot.start, slot.start + slot.size) * self.dp_size) + rank
        return perm[idx].astype(np.int64)

    def fingerprint(self) -> dict:
        """The settings a resumed run must share for its step counter to mean the same data."""
        return {
            "num_packs": self.num_packs,
            "micro_num": self.micro_num,
            "dp_size": self.dp_size,
            "seed": self.seed,
            "rampup_batch_size": self.rampup_spec,
        }


# Stands for the checkpoint's folder in the message of changed_settings; the caller that knows the
# folder puts it in (trainer/startup.py).
CHECKPOINT_FOLDER = "<the checkpoint folder>"


def changed_settings(saved: dict, mine: dict, *, what: str, strict: bool, restart: str) -> dict:
    """Compare a saved loader state with this loader's fingerprint; returns {key: (saved, now)}.

    With `strict`, any difference is a DataError: the saved step no longer names the same batches.
    """
    changed = {k: (saved[k], v) for k, v in mine.items() if k in saved and saved[k] != v}
    if changed and strict:
        diff = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise DataError(
            f"The checkpoint's {what} was saved under other data settings ({diff}), so its step no longer "
            f"names the same batches. Restore with the original data settings, or load the checkpoint "
            f"without its data position to continue at step {saved['step']} of the new {restart}: on the "
            f"command line --set ckpt.auto_resume=False --set ckpt.load_ckpt_info.path={CHECKPOINT_FOLDER} "
            f"--set \"ckpt.load_ckpt_info.content=('model', 'optimizer', 'scheduler')\" (in code, restore "
            f"the loader with strict=False)."
        )
    return changed
