"""InternEvo's packing: shuffled samples -> one token stream -> packs of `packed_length` tokens.

Each source (one `.bin` file, or the mock data) is packed on its own, as InternEvo does: its
samples are shuffled with `np.random.RandomState(1024)` (InternEvo's fixed DEFAULT_SEED),
concatenated, and cut into `num_tokens // packed_length` packs; the tail shorter than a pack is
dropped. Pack k is tokens [k*L, (k+1)*L) of the stream; `np.cumsum` + `np.searchsorted` find its
samples, so building one pack reads only the samples it touches.

Within a pack (`packed_length = seq_len * micro_bsz`):

* pack_sample_into_one=False (InternEvo's PackedDatasetWithCut): each sample fragment is split
  into seq_len pieces counted from the fragment's start; every piece is a segment (attention never
  crosses it) with positions 0, 1, ... Labels are the next token of the same sample; a sample's
  last token gets -100; a fragment cut at the pack end keeps its true next token as label.
* pack_sample_into_one=True (InternEvo's PackedDatasetWithoutCuSeqlen): segments are the fixed
  seq_len windows, positions 0..seq_len-1 in each. Labels as above, except that the last token of
  every fragment, including one cut at the pack end, gets -100 (InternEvo's behaviour).

With `unpacked=True` (InternEvo's `data.use_packed_dataset=False`: PackedDatasetWithCut.build_unpack
followed by unpack_data) the number of packs and their sampling stay the same, but pack k holds the
samples at positions k*micro_bsz .. (k+1)*micro_bsz - 1 of the shuffled order, one per seq_len row
(`fill_rows`); positions past the last sample leave empty rows. pack_sample_into_one=True ignores it:
there InternEvo's rows are already the fixed seq_len windows.

Then InternEvo's collate step (`collate`): inputs are abs(id) and a label is kept only if it is > 0,
so the position predicting a negative id (a prompt token, masked from the loss) and the position
predicting id 0 get label -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from internevo_jax.names import IGNORE_INDEX

DEFAULT_PACK_SEED = 1024
PACK_KEYS = ("input_ids", "labels", "positions", "segment_ids", "type_ids")


class SampleSource(Protocol):
    """What packing needs from a source: per-sample lengths, random access, a dataset type id."""

    lengths: np.ndarray
    type_id: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class PackedDataset:
    """Random access to the packs of one source (a grain RandomAccessDataSource of dicts)."""

    def __init__(
        self,
        source: SampleSource,
        *,
        seq_len: int,
        packed_length: int,
        pack_sample_into_one: bool = False,
        unpacked: bool = False,
        seed: int = DEFAULT_PACK_SEED,
    ):
        if packed_length % seq_len:
            raise ValueError(f"packed_length {packed_length} must be a multiple of seq_len {seq_len}")
        self.source = source
        self.seq_len = int(seq_len)
        self.packed_length = int(packed_length)
        self.pack_sample_into_one = bool(pack_sample_into_one)
        # InternEvo unpacks only PackedDatasetWithCut; its fixed windows are rows already.
        self.unpacked = bool(unpacked) and not self.pack_sample_into_one
        self.rows = self.packed_length // self.seq_len
        order = np.arange(len(source))
        np.random.RandomState(seed).shuffle(order)
        self.order = order
        self.ends = np.cumsum(np.asarray(source.lengths, dtype=np.int64)[order])  # stream end of each sample
        self.num_tokens = int(self.ends[-1]) if len(self.ends) else 0

    def __len__(self) -> int:
        return self.num_tokens // self.packed_length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"pack {index} out of range ({len(self)} packs)")
        if self.unpacked:
            return self._unpacked_pack(index)
        L = self.packed_length
        start, end = index * L, (index + 1) * L
        first = int(np.searchsorted(self.ends, start, side="right"))
        last = int(np.searchsorted(self.ends, end, side="left"))
        fragments = []
        for j in range(first, last + 1):
            s_start = int(self.ends[j - 1]) if j else 0
            n = int(self.ends[j]) - s_start
            a, b = max(start - s_start, 0), min(end - s_start, n)
            if b > a:  # skip empty samples
                fragments.append((self.source[int(self.order[j])], a, b))
        return fill_pack(
            fragments,
            seq_len=self.seq_len,
            packed_length=L,
            pack_sample_into_one=self.pack_sample_into_one,
            type_id=self.source.type_id,
        )

    def _row_positions(self, index: int) -> range:
        """Positions in the shuffled order of the samples unpacked pack `index` holds, one per row."""
        return range(index * self.rows, min((index + 1) * self.rows, len(self.order)))

    def _unpacked_pack(self, index: int) -> dict[str, np.ndarray]:
        samples = [self.source[int(self.order[j])] for j in self._row_positions(index)]
        return fill_rows(samples, seq_len=self.seq_len, rows=self.rows, type_id=self.source.type_id)

    def sample_indices(self, index: int) -> list[int]:
        """Source indices of the samples pack `index` reads (to check which samples a reader touches)."""
        lengths = np.asarray(self.source.lengths)
        if self.unpacked:
            picked = (int(self.order[j]) for j in self._row_positions(index))
            return [i for i in picked if lengths[i] > 0]
        L = self.packed_length
        first = int(np.searchsorted(self.ends, index * L, side="right"))
        last = int(np.searchsorted(self.ends, (index + 1) * L, side="left"))
        return [int(self.order[j]) for j in range(first, last + 1) if lengths[self.order[j]] > 0]


def fill_pack(
    fragments: Sequence[tuple[np.ndarray, int, int]],
    *,
    seq_len: int,
    packed_length: int,
    pack_sample_into_one: bool,
    type_id: int,
) -> dict[str, np.ndarray]:
    """One pack from sample fragments `(sample, a, b)` (tokens `sample[a:b]`) filling exactly packed_length.

    Shared by the random-access packing above and the streaming packer, so both follow one set of rules.
    """
    L, S = int(packed_length), int(seq_len)
    tokens = np.empty(L, dtype=np.int64)
    labels = np.empty(L, dtype=np.int64)
    positions = np.empty(L, dtype=np.int32)
    segments = np.empty(L, dtype=np.int32)
    pos = 0
    seg = 0
    for sample, a, b in fragments:
        m = b - a
        tokens[pos : pos + m] = sample[a:b]
        labels[pos : pos + m - 1] = sample[a + 1 : b]
        cut = b < len(sample)  # only the pack's last fragment can be cut
        labels[pos + m - 1] = sample[b] if cut and not pack_sample_into_one else IGNORE_INDEX
        if not pack_sample_into_one:
            rel = np.arange(m, dtype=np.int32)
            positions[pos : pos + m] = rel % S
            segments[pos : pos + m] = seg + 1 + rel // S
            seg += -(-m // S)
        pos += m
    assert pos == L, (pos, L)
    if pack_sample_into_one:
        positions[:] = np.tile(np.arange(S, dtype=np.int32), L // S)
        segments[:] = np.repeat(np.arange(1, L // S + 1, dtype=np.int32), S)
    return collate(tokens, labels, positions, segments, np.full(L, type_id, dtype=np.int32))


def fill_rows(
    samples: Sequence[np.ndarray], *, seq_len: int, rows: int, type_id: int
) -> dict[str, np.ndarray]:
    """One pack of `rows` rows of seq_len tokens: row j holds samples[j] cut to seq_len, then padding.

    InternEvo's unpacked batches (and its validation batches): a sample is its own segment (id j + 1),
    its last kept token gets label -100 even when the sample was cut, and padding is input 0, label
    -100, segment 0 (the model's padding id) and type 0. Positions are 0..seq_len-1 in every row.
    """
    S, L = int(seq_len), int(seq_len) * int(rows)
    if len(samples) > rows:
        raise ValueError(f"{len(samples)} samples do not fit {rows} rows")
    tokens = np.zeros(L, dtype=np.int64)
    labels = np.full(L, IGNORE_INDEX, dtype=np.int64)
    segments = np.zeros(L, dtype=np.int32)
    types = np.zeros(L, dtype=np.int32)
    for j, sample in enumerate(samples):
        chunk = np.asarray(sample[:S], dtype=np.int64)
        n, a = len(chunk), j * S
        if n == 0:
            continue
        tokens[a : a + n] = chunk
        labels[a : a + n - 1] = chunk[1:]
        segments[a : a + n] = j + 1
        types[a : a + n] = type_id
    positions = np.tile(np.arange(S, dtype=np.int32), int(rows))
    return collate(tokens, labels, positions, segments, types)


def collate(tokens, labels, positions, segments, types) -> dict[str, np.ndarray]:
    """InternEvo's collate step: inputs abs(id), a label kept only if it is > 0 (else -100)."""
    return {
        "input_ids": np.abs(tokens).astype(np.int32),
        "labels": np.where(labels > 0, labels, IGNORE_INDEX).astype(np.int32),
        "positions": positions,
        "segment_ids": segments,
        "type_ids": types,
    }


class ConcatDataset:
    """Packs of several PackedDatasets, one after another (InternEvo's ConcatDataset)."""

    def __init__(self, datasets: Sequence):
        self.datasets = list(datasets)
        sizes = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int):
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range ({len(self)} items)")
        d = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.datasets[d][index - int(self.starts[d])]


def stack_packs(packs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack pack dicts along a new leading axis."""
    return {k: np.stack([p[k] for p in packs]) for k in PACK_KEYS}
