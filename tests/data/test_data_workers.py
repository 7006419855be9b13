"""data.num_worker > 0: batches built in grain worker processes equal get_batch, and resume exactly."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
from data_helpers import data_config, small_corpus

from internevo_jax.data import build_train_loader
from internevo_jax.data import loader as loader_mod


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_worker_processes_match_get_batch_and_resume(tmp_path):
    cfg = data_config(train_folder=str(small_corpus(tmp_path)), total_steps=12, num_worker=2)
    loader = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    reference = build_train_loader(
        data_config(train_folder=str(tmp_path), total_steps=12), dp_size=2, dp_ranks=[0, 1]
    )
    it = iter(loader)
    got = [next(it) for _ in range(5)]
    assert len(multiprocessing.active_children()) >= 2  # the batches come from worker processes
    assert [s for s, _ in got] == [0, 1, 2, 3, 4]
    for step, batch in got:
        _same(batch, reference.get_batch(step))
    state = loader.state()
    it.close()  # leaving the loop stops the workers
    assert state["step"] == 5 and not loader._workers
    assert not multiprocessing.active_children()

    resumed = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    resumed.restore(state)
    with resumed:
        rest = list(resumed)
    assert [s for s, _ in rest] == list(range(5, 12))
    for step, batch in rest:
        _same(batch, reference.get_batch(step))
    assert resumed.position == 12


def test_without_grain_threads_build_batches_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(
        loader_mod, "import_grain", lambda: (None, "ModuleNotFoundError: No module named 'grain'")
    )
    cfg = data_config(train_folder=str(small_corpus(tmp_path)), total_steps=6, num_worker=2)
    loader = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    with caplog.at_level(logging.WARNING, logger="internevo_jax.data.loader"):
        batches = list(loader)
    assert "grain cannot be imported (ModuleNotFoundError: No module named 'grain')" in caplog.text
    for step, batch in batches:
        _same(batch, loader.get_batch(step))
