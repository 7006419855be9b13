"""type_names(cfg): the dataset type of each type id, for per-type metrics."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import data_config, small_corpus

from internevo_jax.data import DataError, build_train_loader, type_names


def test_names_follow_the_type_ids(tmp_path):
    root = small_corpus(tmp_path / "train")
    (root / "README").write_text("InternEvo numbers files in the folder too")
    names = type_names(data_config(train_folder=str(root)))
    assert names == ["README", "code", "en"]
    loader = build_train_loader(data_config(train_folder=str(root)), dp_size=1, dp_ranks=[0])
    code = loader.packs[0]  # code/c.bin comes first in the walk
    assert names[int(np.unique(code["type_ids"])[0])] == "code"
    assert names[int(loader.packs[len(loader.packs) - 1]["type_ids"][0])] == "en"


def test_mock_streaming_and_missing(tmp_path):
    assert type_names(data_config()) == ["mock"]
    assert type_names(data_config(type="streaming", train_folder="x.jsonl")) == ["en"]
    with pytest.raises(DataError, match="Cannot list the data folder"):
        type_names(data_config(train_folder=str(tmp_path / "none")))
