"""Names of the dataset types, for per-type metrics (`tokens/<type>`, `acc/<type>`)."""

from __future__ import annotations

from internevo_jax.data.binmeta import dataset_type_ids
from internevo_jax.data.errors import DataError
from internevo_jax.data.streaming import STREAMING_TYPE_NAMES, STREAMING_TYPES

MOCK_TYPE_NAMES = ["mock"]


def type_names(cfg) -> list[str]:
    """`names[i]` is the dataset type whose batches carry `type_ids == i`.

    Tokenized data: the sorted top-level entries of data.train_folder (InternEvo numbers them all, so
    the list matches the type ids the loader assigns); mock data (train_folder None): ["mock"];
    streaming data (type "streaming" or "hf"): ["en"] (InternEvo's one streaming type).
    """
    data = cfg.data
    if data.type in STREAMING_TYPES:
        return list(STREAMING_TYPE_NAMES)
    folder = data.train_folder
    if folder is None:
        return list(MOCK_TYPE_NAMES)
    try:
        return list(dataset_type_ids(folder))
    except OSError as e:
        raise DataError(
            f"Cannot list the data folder {folder} for its dataset types ({e.strerror}); set data.train_folder "
            f"to the folder holding the <type>/*.bin files."
        ) from None
