"""InternEvo-compatible data at training time: tokenized .bin/.bin.meta files, mock data, streaming
text, packing, sampling, loaders and validation sets.

Settings are read from the typed fields of `cfg.data` (config.schema.DataConfig). Offline
preparation (tokenizing files, alpaca, the demo corpus) is `internevo_jax.preprocess`, built on
this package. See docs/data.md for the formats and the exact semantics.
"""

from internevo_jax.data.binmeta import (
    BinSource,
    BinWriter,
    dataset_type_ids,
    encode_line,
    find_bin_files,
    load_bin_folder,
    read_meta,
    write_bin,
)
from internevo_jax.data.errors import DataError
from internevo_jax.data.loader import (
    BatchBuilder,
    TrainLoader,
    ValidSet,
    build_train_loader,
    build_valid_loaders,
)
from internevo_jax.data.mock import MockSource
from internevo_jax.data.packing import PACK_KEYS, ConcatDataset, PackedDataset
from internevo_jax.data.sampler import BatchSchedule, BatchSkipper, parse_rampup, parse_skip_batches
from internevo_jax.data.streaming import Cursor, StreamingTrainLoader
from internevo_jax.data.typenames import type_names

__all__ = [
    "PACK_KEYS",
    "BatchBuilder",
    "Cursor",
    "StreamingTrainLoader",
    "type_names",
    "BatchSchedule",
    "BatchSkipper",
    "BinSource",
    "BinWriter",
    "ConcatDataset",
    "DataError",
    "MockSource",
    "PackedDataset",
    "TrainLoader",
    "ValidSet",
    "build_train_loader",
    "build_valid_loaders",
    "dataset_type_ids",
    "encode_line",
    "find_bin_files",
    "load_bin_folder",
    "parse_rampup",
    "parse_skip_batches",
    "read_meta",
    "write_bin",
]
