"""The data package reads its settings from the typed DataConfig fields; the schema holds the defaults."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
from data_helpers import data_config, small_corpus

from internevo_jax.config import DataConfig, config_from_dict
from internevo_jax.data import build_train_loader, build_valid_loaders, type_names

FIELDS = {f.name for f in dataclasses.fields(DataConfig)}


class _Reads:
    """A `cfg.data` stand-in: answers with a real DataConfig's values and records every name read."""

    def __init__(self, data):
        self._data, self.names = data, set()

    def __getattr__(self, name):
        self.names.add(name)
        return getattr(self._data, name)


def _reading(cfg):
    data = _Reads(cfg.data)
    return types.SimpleNamespace(data=data, model=cfg.model, seed=cfg.seed), data


def test_default_mock_data_and_workers_are_the_schemas():
    # InternEvo's defaults: fixed_random_dataset_seqlen=True (every mock sample seq_len tokens), num_worker=4.
    cfg = config_from_dict(
        dict(data=dict(seq_len=16, micro_bsz=2, micro_num=2, total_steps=4), model=dict(vocab_size=1000)),
        log=lambda *_: None,
    )
    loader = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    assert loader.num_workers == 4
    assert loader.summary["tokens"] == loader.summary["samples"] * 16
    (valid,) = build_valid_loaders(cfg, dp_size=1, dp_ranks=[0]).values()
    assert {len(valid.samples[i]) for i in range(20)} == {16}


@pytest.mark.parametrize("missing", ["fixed_random_dataset_seqlen", "num_worker"])
def test_no_default_of_its_own(missing):
    # A settings object without a schema field is an error, never read with a default of the loader's.
    cfg = data_config()
    values = {f: getattr(cfg.data, f) for f in FIELDS if f != missing}
    partial = types.SimpleNamespace(data=types.SimpleNamespace(**values), model=cfg.model, seed=cfg.seed)
    with pytest.raises(AttributeError, match=missing):
        build_train_loader(partial, dp_size=1, dp_ranks=[0])


def test_tokenized_and_mock_read_schema_fields_only(tmp_path):
    for cfg in (data_config(train_folder=str(small_corpus(tmp_path))), data_config()):
        stand_in, data = _reading(cfg)
        build_train_loader(stand_in, dp_size=1, dp_ranks=[0])
        build_valid_loaders(stand_in, dp_size=1, dp_ranks=[0])
        type_names(stand_in)
        assert data.names and data.names <= FIELDS, data.names - FIELDS


def test_streaming_reads_schema_fields_only(tmp_path, internlm_tokenizer):
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps({"text": f"record {i}", "body": "other"}) + "\n" for i in range(8)))
    cfg = data_config(
        vocab_size=103168, type="streaming", train_folder=str(src), tokenizer_path=str(internlm_tokenizer)
    )
    stand_in, data = _reading(cfg)
    loader = build_train_loader(stand_in, dp_size=1, dp_ranks=[0])
    type_names(stand_in)
    assert data.names <= FIELDS, data.names - FIELDS  # InternEvo has no key for the text field
    assert loader.summary["field"] == "text"
