"""data.type="streaming": raw text read in order, tokenized on the fly, packed, resumable by step."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import sentencepiece as spm
from data_helpers import data_config, reference_stream_packs

from internevo_jax.data import DataError, StreamingTrainLoader, build_train_loader
from internevo_jax.data import textsource as textsource_mod
from internevo_jax.data.textsource import JsonlFile, open_text_files

VOCAB = 103168
TEXTS = [
    f"Record {i}: " + "the quick brown fox jumps. " * (i % 7) + "今天天气晴朗" * (i % 3) for i in range(41)
]


def _jsonl(path, texts=TEXTS, field="text"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    return path


def _cfg(train_folder, tokenizer, **kw):
    d = dict(seq_len=16, micro_bsz=2, micro_num=2, total_steps=40)
    d.update(kw)
    return data_config(
        vocab_size=VOCAB, type="streaming", train_folder=str(train_folder), tokenizer_path=str(tokenizer), **d
    )


def _expected(tokenizer, texts, rank, dp, L, count):
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    samples = [[1, *sp.encode(t), 2] for t in texts[rank::dp]]
    return reference_stream_packs(samples, L, count)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batches_follow_records_in_order(tmp_path, internlm_tokenizer):
    src = _jsonl(tmp_path / "data.jsonl")
    loader = build_train_loader(_cfg(src, internlm_tokenizer), dp_size=2, dp_ranks=[0, 1])
    assert isinstance(loader, StreamingTrainLoader)
    steps = 30  # several passes over the file
    batches = [loader.get_batch(s) for s in range(steps)]
    for rank in (0, 1):
        ref = _expected(internlm_tokenizer, TEXTS, rank, 2, 32, 2 * steps)
        got_in = np.concatenate([b["input_ids"][:, rank] for b in batches])
        got_lab = np.concatenate([b["labels"][:, rank] for b in batches])
        np.testing.assert_array_equal(got_in, ref["input_ids"])
        np.testing.assert_array_equal(got_lab, ref["labels"])
    b = batches[0]
    assert b["input_ids"].shape == (2, 2, 32) and (b["type_ids"] == 0).all()
    # Segments follow the samples, split into seq_len pieces; positions restart in each.
    seg, pos = b["segment_ids"][0, 0], b["positions"][0, 0]
    assert seg[0] == 1 and (np.diff(seg) >= 0).all() and ((pos == 0) == np.r_[True, np.diff(seg) > 0]).all()
    assert loader.epoch_at(0) == 0 and loader.epoch_at(steps - 1) > 0


def test_resume_from_state_is_exact_and_direct(tmp_path, internlm_tokenizer, monkeypatch):
    src = _jsonl(tmp_path / "data.jsonl")
    cfg = _cfg(src, internlm_tokenizer, total_steps=25)
    uninterrupted = list(build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1]))
    first = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    it = iter(first)
    for _ in range(13):
        next(it)
    state = json.loads(json.dumps(first.state()))
    assert state["step"] == 13 and set(state["cursors"]) == {"0", "1"}

    scans = []
    real_scan = JsonlFile.scan
    monkeypatch.setattr(JsonlFile, "scan", lambda self, pos: (scans.append(pos), real_scan(self, pos))[1])
    resumed = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    resumed.restore(state)
    rest = list(resumed)
    # Each rank's first read starts at its saved cursor, not at the start of the file.
    assert scans[0] == state["cursors"]["0"]["pos"] > 0 and state["cursors"]["1"]["pos"] in scans
    assert [s for s, _ in rest] == list(range(13, 25))
    for (s1, b1), (s2, b2) in zip(rest, uninterrupted[13:]):
        assert s1 == s2
        _same(b1, b2)

    # A bare step counter (or another host's cursors) resumes exactly too, by reading forward.
    bare = build_train_loader(cfg, dp_size=2, dp_ranks=[0, 1])
    bare.restore({"step": 13})
    _same(bare.get_batch(13), uninterrupted[13][1])
    with pytest.raises(DataError, match="dp_size"):
        build_train_loader(cfg, dp_size=1, dp_ranks=[0]).restore(state)


def test_background_thread_and_ramp(tmp_path, internlm_tokenizer):
    src = _jsonl(tmp_path / "data.jsonl")
    cfg = _cfg(src, internlm_tokenizer, micro_num=3, rampup_batch_size="1 1 2", total_steps=9, num_worker=2)
    plain = build_train_loader(cfg, dp_size=1, dp_ranks=[0])
    threaded = list(build_train_loader(cfg, dp_size=1, dp_ranks=[0]))
    assert [plain.micro_num_at(s) for s in range(9)] == [1, 1, 2, 2, 3, 3, 3, 3, 3]
    for step, batch in threaded:
        _same(batch, plain.get_batch(step))
    ref = _expected(internlm_tokenizer, TEXTS, 0, 1, 32, 21)
    got = np.concatenate([b["input_ids"][:, 0] for _, b in threaded])
    np.testing.assert_array_equal(got, ref["input_ids"])


def test_ranks_read_only_their_records(tmp_path, internlm_tokenizer, monkeypatch):
    src = _jsonl(tmp_path / "data.jsonl")
    cfg = _cfg(src, internlm_tokenizer)
    full = build_train_loader(cfg, dp_size=3, dp_ranks=[0, 1, 2]).get_batch(4)
    decoded = []
    real_text = JsonlFile.text

    def spy(self, raw, pos):
        decoded.append(json.loads(raw)["id"])
        return real_text(self, raw, pos)

    monkeypatch.setattr(JsonlFile, "text", spy)
    parts = []
    for ranks in ([0], [1, 2]):
        decoded.clear()
        loader = build_train_loader(cfg, dp_size=3, dp_ranks=ranks)
        parts.append(loader.get_batch(4))
        assert decoded and all(i % 3 in ranks for i in decoded)  # others' records are skipped unparsed
    for k in full:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts], axis=1), full[k])


def test_pack_sample_into_one_windows(tmp_path, internlm_tokenizer):
    src = _jsonl(tmp_path / "data.jsonl")
    loader = build_train_loader(
        _cfg(src, internlm_tokenizer, pack_sample_into_one=True), dp_size=1, dp_ranks=[0]
    )
    b = loader.get_batch(1)
    np.testing.assert_array_equal(b["positions"][0, 0], np.tile(np.arange(16), 2))
    np.testing.assert_array_equal(b["segment_ids"][0, 0], np.repeat([1, 2], 16))
    ref = _expected(internlm_tokenizer, TEXTS, 0, 1, 32, 4)
    np.testing.assert_array_equal(b["input_ids"][:, 0], ref["input_ids"][2:4])


def test_folder_subset_and_split_names(tmp_path, internlm_tokenizer):
    _jsonl(tmp_path / "corpus" / "web" / "train-00000.jsonl", TEXTS[:20])
    _jsonl(tmp_path / "corpus" / "web" / "train-00001.jsonl", TEXTS[20:])
    _jsonl(tmp_path / "corpus" / "web" / "test-00000.jsonl", ["not for training"] * 5)
    _jsonl(tmp_path / "corpus" / "other" / "x.jsonl", ["another subset"] * 5)
    files = open_text_files(tmp_path / "corpus", subset_name="web")
    assert [f.path.rsplit("/", 1)[-1] for f in files] == ["train-00000.jsonl", "train-00001.jsonl"]
    cfg = _cfg(tmp_path / "corpus", internlm_tokenizer, subset_name="web")
    batch = build_train_loader(cfg, dp_size=1, dp_ranks=[0]).get_batch(3)
    np.testing.assert_array_equal(
        batch["input_ids"][:, 0], _expected(internlm_tokenizer, TEXTS, 0, 1, 32, 8)["input_ids"][6:8]
    )


def test_bad_records_and_settings(tmp_path, internlm_tokenizer):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n\n{"content": "no text field"}\n')
    loader = build_train_loader(_cfg(src, internlm_tokenizer), dp_size=1, dp_ranks=[0])
    with pytest.raises(DataError, match=r"bad\.jsonl, line 3 has no 'text' field"):
        loader.get_batch(0)
    src.write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2 is not a JSON object"):
        build_train_loader(_cfg(src, internlm_tokenizer), dp_size=1, dp_ranks=[0]).get_batch(0)
    src.write_text('{"text": "one"}\n{"text": "two"}\n')
    with pytest.raises(DataError, match="holds 2 records, fewer than the 3 data-parallel ranks"):
        build_train_loader(_cfg(src, internlm_tokenizer), dp_size=3, dp_ranks=[2]).get_batch(0)
    with pytest.raises(DataError, match="tokenizer_path"):
        build_train_loader(_cfg(src, ""), dp_size=1, dp_ranks=[0])
    with pytest.raises(DataError, match=r"data.tokenizer_path=.*none.model does not exist"):
        build_train_loader(_cfg(src, tmp_path / "none.model"), dp_size=1, dp_ranks=[0])
    with pytest.raises(DataError, match="does not exist"):
        build_train_loader(_cfg(tmp_path / "nope", internlm_tokenizer), dp_size=1, dp_ranks=[0])
    with pytest.raises(DataError, match="model.vocab_size"):
        build_train_loader(
            data_config(
                vocab_size=1000,
                type="streaming",
                train_folder=str(src),
                tokenizer_path=str(internlm_tokenizer),
            ),
            dp_size=1,
            dp_ranks=[0],
        )


def test_parquet_and_arrow_need_datasets(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "part.parquet").write_bytes(b"PAR1")
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name.split(".")[0] in ("datasets", "pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(DataError, match="pip install datasets"):
        textsource_mod.open_text_files(tmp_path / "d")


def test_huggingface_folders(tmp_path, internlm_tokenizer):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": TEXTS, "id": list(range(len(TEXTS)))})
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(str(tmp_path / "dict"))
    (tmp_path / "pq" / "data").mkdir(parents=True)
    ds.select(range(20)).to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00002.parquet"))
    ds.select(range(20, 41)).to_parquet(str(tmp_path / "pq" / "data" / "train-00001-of-00002.parquet"))

    reference = build_train_loader(
        _cfg(_jsonl(tmp_path / "ref.jsonl"), internlm_tokenizer), dp_size=2, dp_ranks=[0, 1]
    )
    expected = [reference.get_batch(s) for s in range(12)]
    for folder in ("saved", "dict", "pq"):
        loader = build_train_loader(_cfg(tmp_path / folder, internlm_tokenizer), dp_size=2, dp_ranks=[0, 1])
        for s in range(12):
            _same(loader.get_batch(s), expected[s])
    arrow = sorted((tmp_path / "saved").glob("*.arrow"))
    files = open_text_files(arrow[0])
    assert [t for _, _, t in files[0].scan(0)][:3] == TEXTS[:3]
    with pytest.raises(DataError, match="no column 'body'"):
        list(open_text_files(tmp_path / "saved", field="body")[0].scan(0))
