"""Several processes: each reads only its data-parallel ranks' packs, and resumes from the shared step.

The last test starts two real jax.distributed processes (tests/data/multihost_loader_main.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import data_config, small_corpus

from internevo_jax.config import load_config
from internevo_jax.data import DataError, build_train_loader

REPO = Path(__file__).resolve().parents[2]


class CountingSource:
    """Wraps a sample source and records which samples are read."""

    def __init__(self, source):
        self.source, self.reads = source, set()
        self.lengths, self.type_id = source.lengths, source.type_id

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads.add(int(i))
        return self.source[i]


def _cfg(tmp_path, **kw):
    return data_config(train_folder=str(small_corpus(tmp_path)), seq_len=8, micro_bsz=2, micro_num=2, **kw)


def test_disjoint_processes_make_up_the_full_batch(tmp_path):
    cfg = _cfg(tmp_path, rampup_batch_size="1 1 2")
    full = build_train_loader(cfg, dp_size=4, dp_ranks=range(4))
    hosts = [build_train_loader(cfg, dp_size=4, dp_ranks=r) for r in ([0, 2], [1, 3])]
    for step in range(12):  # through the ramp and into the second epoch
        want = full.get_batch(step)
        got = [h.get_batch(step) for h in hosts]
        for k in want:
            np.testing.assert_array_equal(got[0][k], want[k][:, [0, 2]])
            np.testing.assert_array_equal(got[1][k], want[k][:, [1, 3]])


def test_a_process_reads_only_its_own_packs(tmp_path):
    cfg = _cfg(tmp_path)
    for ranks in ([0], [1, 2]):
        loader = build_train_loader(cfg, dp_size=3, dp_ranks=ranks)
        packed = loader.packs.datasets
        for p in packed:
            p.source = CountingSource(p.source)
        allowed = [set() for _ in packed]
        for step in range(6):
            loader.get_batch(step)
            for r in ranks:
                for idx in loader.schedule.pack_indices(step, r):
                    d = int(np.searchsorted(loader.packs.starts, idx, side="right")) - 1
                    allowed[d].update(packed[d].sample_indices(int(idx - loader.packs.starts[d])))
        reads = [p.source.reads for p in packed]
        assert any(reads) and sum(map(len, allowed)) < sum(len(p.source) for p in packed) / 2
        for d, p in enumerate(packed):
            assert p.source.reads <= allowed[d], f"file {d} read samples of other ranks' packs"
            # and nothing of packs no local rank reads
            others = set(range(len(p.source))) - allowed[d]
            assert not (p.source.reads & others)


def test_resume_on_another_host_count(tmp_path):
    """The state is the step: the same dp size split over other hosts resumes at the same batches."""
    cfg = _cfg(tmp_path, total_steps=10)
    one_host = build_train_loader(cfg, dp_size=4, dp_ranks=range(4))
    it = iter(one_host)
    for _ in range(4):
        next(it)
    state = one_host.state()
    expected = [b for _, b in it]
    for ranks in ([0, 1], [2, 3]):
        host = build_train_loader(cfg, dp_size=4, dp_ranks=ranks)
        host.restore(state)
        for (step, batch), want in zip(host, expected):
            for k in want:
                np.testing.assert_array_equal(batch[k], want[k][:, ranks], err_msg=f"{step} {k}")


def test_resume_with_another_dp_size(tmp_path):
    """A dp change would make the step name other packs: refused, unless asked to continue anyway."""
    cfg = _cfg(tmp_path, total_steps=10)
    state = build_train_loader(cfg, dp_size=4, dp_ranks=range(4)).state() | {"step": 5}
    two = build_train_loader(cfg, dp_size=2, dp_ranks=range(2))
    with pytest.raises(DataError, match="dp_size: saved 4, now 2"):
        two.restore(state)
    two.restore(state, strict=False)
    step, batch = next(iter(two))
    fresh = build_train_loader(cfg, dp_size=2, dp_ranks=range(2)).get_batch(5)
    assert step == 5
    for k in batch:
        np.testing.assert_array_equal(batch[k], fresh[k])


MULTIHOST_CONFIG = """
JOB_NAME = "data_multihost"
data = dict(seq_len=8, micro_bsz=2, micro_num=2, total_steps=12, valid_every=0, rampup_batch_size="1 1 2",
            train_folder={folder!r})
model = dict(num_attention_heads=4, hidden_size=32, num_layers=2, vocab_size=1000, mlp_ratio=2.0,
             multiple_of=32, dtype="torch.float32", use_flash_attn=False)
parallel = dict(zero1=1)
ckpt = dict(enable_save_ckpt=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_jax_processes_read_disjoint_shares_of_the_one_process_stream(tmp_path):
    """2 real jax.distributed processes x 2 CPU devices (gloo, 127.0.0.1), data-parallel size 4: each
    builds the loader for its own local_dp_ranks; their rows are disjoint and together are the rows of
    one loader over all 4 ranks, step for step (through the ramp and into the second epoch)."""
    folder = small_corpus(tmp_path / "corpus")
    (tmp_path / "cfg.py").write_text(MULTIHOST_CONFIG.format(folder=str(folder)))
    out = tmp_path / "out"
    out.mkdir()
    steps, port = 12, _free_port()
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
    )
    procs = [
        subprocess.Popen(
            ["timeout", "120", sys.executable, str(REPO / "tests" / "data" / "multihost_loader_main.py"),
             "--config", str(tmp_path / "cfg.py"), "--rank", str(rank), "--world_size", "2",
             "--port", str(port), "--out", str(out), "--steps", str(steps)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(2)
    ]  # fmt: skip
    outs = [p.communicate()[0] for p in procs]
    for p, text in zip(procs, outs):
        assert p.returncode == 0, text[-3000:]
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(infos):
        assert (info["process_index"], info["process_count"]) == (r, 2)
        assert (info["devices"], info["local_devices"], info["dp_size"]) == (4, 2, 4)
    shares = [info["dp_ranks"] for info in infos]
    assert sorted(shares[0] + shares[1]) == [0, 1, 2, 3] and not set(shares[0]) & set(shares[1])

    cfg = load_config(tmp_path / "cfg.py", log=lambda *_: None)
    one = build_train_loader(cfg, dp_size=4, dp_ranks=range(4))
    seen_packs: list[set] = [set(), set()]
    for step in range(steps):
        want = one.get_batch(step)
        got = [dict(np.load(out / f"rank{r}_step{step}.npz")) for r in range(2)]
        for k in want:
            # the two processes' rows, in dp-rank order, are the one-process batch
            joined = np.concatenate([got[0][k], got[1][k]], axis=1)[:, np.argsort(shares[0] + shares[1])]
            np.testing.assert_array_equal(joined, want[k], err_msg=f"step {step} {k}")
        for r in range(2):
            assert got[r]["input_ids"].shape[1] == len(shares[r])
            for rank in shares[r]:
                seen_packs[r].update(int(i) for i in one.schedule.pack_indices(step, rank))
        # within a step the two shares are disjoint packs (one epoch never repeats a pack)
        step_packs = [
            {int(i) for rank in shares[r] for i in one.schedule.pack_indices(step, rank)} for r in range(2)
        ]
        assert not step_packs[0] & step_packs[1], f"step {step}: both processes read the same pack"
    assert seen_packs[0] and seen_packs[1]
