"""Mock samples for `train_folder=None`: InternEvo's RandomDataset, generated lazily.

InternEvo draws, with `np.random.RandomState(1999)`, n ~ U[1, 30) and r ~ U[10, 200) per sample;
the sample is `[n, r % vocab] + list(range(n)) * r`, cut to max_len (= seq_len). With
`fixed_random_dataset_seqlen` r is doubled until the repeated part reaches max_len. The seed is
fixed (not the config's seed), so every run sees the same mock data, as in InternEvo.
"""

from __future__ import annotations

import numpy as np

from internevo_jax.data.errors import DataError

MOCK_SEED = 1999
TRAIN_MOCK_SAMPLES = 1_000_000  # InternEvo's train RandomDataset size
VALID_MOCK_SAMPLES_PER_RANK = 500  # InternEvo's valid RandomDataset: 500 per data-parallel rank


class MockSource:
    """`num_samples` deterministic samples; `source[i]` builds sample i on demand (int32 tokens)."""

    type_id = 0

    def __init__(self, num_samples: int, max_len: int, vocab_size: int, fixed_seqlen: bool = False):
        if vocab_size < 30:
            raise DataError(
                f"Mock data (data.train_folder=None) uses token ids up to 29, but model.vocab_size is "
                f"{vocab_size}. Use vocab_size >= 30 or point data.train_folder at tokenized data."
            )
        rng = np.random.RandomState(MOCK_SEED)
        self.n = rng.randint(1, 30, size=(num_samples,))
        rep = rng.randint(10, 200, size=(num_samples,))
        if fixed_seqlen:
            # Doubling r until n*r >= max_len, done for all samples at once.
            for _ in range(64):
                short = self.n * rep < max_len
                if not short.any():
                    break
                rep = np.where(short, rep * 2, rep)
        self.rep = rep
        self.max_len = int(max_len)
        self.vocab_size = int(vocab_size)
        self.lengths = np.minimum(2 + self.n * self.rep, self.max_len).astype(np.int64)
        self.num_tokens = int(self.lengths.sum())
        self.path = "mock"

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"mock sample {index} out of range ({len(self)} samples)")
        n, r = int(self.n[index]), int(self.rep[index])
        body_len = min(n * r, max(self.max_len - 2, 0))
        body = np.tile(np.arange(n, dtype=np.int32), -(-body_len // n))[:body_len]
        head = np.array([n, r % self.vocab_size], dtype=np.int32)
        return np.concatenate([head, body])[: self.max_len]
