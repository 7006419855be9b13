"""docs/config_reference.md stays in sync with the config schema and key_docs.py."""

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from internevo_jax.config import key_docs, reference
from internevo_jax.config.compat import NO_EFFECT_KEYS
from internevo_jax.config.schema import EXTRA_KEYS, SCALARS, SECTIONS

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / reference.REFERENCE_PATH


def _schema_keys(cls, prefix):
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        yield key
        hint = reference.field_hints(cls)[f.name]
        inner = reference.strip_optional(hint)
        if dataclasses.is_dataclass(inner):
            yield from _schema_keys(inner, key)


def test_every_schema_key_has_a_meaning():
    missing = reference.missing_meanings()
    assert not missing, "\n".join(
        f'config key {key!r} has no meaning: add {key!r}: "..." to KEY_DOCS in {reference.KEY_DOCS_PATH}, '
        f"then run `{reference.REGENERATE_COMMAND}`"
        for key in missing
    )


def test_no_meaning_for_a_key_the_schema_lacks():
    unknown = reference.unknown_meanings()
    assert not unknown, "\n".join(
        f"KEY_DOCS in {reference.KEY_DOCS_PATH} describes {key!r}, which the config schema no longer has: "
        "remove the entry or rename it"
        for key in unknown
    )


def test_no_effect_entries_match_no_effect_keys():
    problems = reference.no_effect_mismatches()
    assert not problems, "\n".join(problems)
    unknown_extensions = sorted(key_docs.EXTENSION_KEYS - set(reference.documented_keys()))
    assert not unknown_extensions, f"EXTENSION_KEYS names keys the schema lacks: {unknown_extensions}"


def test_reference_is_up_to_date():
    message = reference.stale_reference_message(REFERENCE)
    assert message is None, message


def test_documented_keys_cover_the_whole_schema():
    """The walk of the schema misses nothing: sections, nested groups, scalars, extras, no-effect keys."""
    keys = set(reference.documented_keys())
    expected = {"JOB_NAME", *SCALARS, *EXTRA_KEYS, *NO_EFFECT_KEYS, *SECTIONS}
    for name, cls in SECTIONS.items():
        expected.update(_schema_keys(cls, name))
    assert keys == expected
    assert {"parallel.zero1.size", "ckpt.load_ckpt_info.ckpt_type", "grad_scaler.fp16.min_scale"} <= keys


def test_a_missing_and_a_stale_entry_are_named():
    docs = dict(key_docs.KEY_DOCS)
    del docs["data.seq_len"]
    docs["data.no_such_key"] = "A key the schema does not have."
    assert reference.missing_meanings(docs) == ["data.seq_len"]
    assert reference.unknown_meanings(docs) == ["data.no_such_key"]
    problems = reference.meaning_problems(docs)
    assert any("'data.seq_len'" in p and reference.KEY_DOCS_PATH in p for p in problems)
    assert any("'data.no_such_key'" in p and "no longer has" in p for p in problems)


def test_no_effect_phrase_must_match():
    docs = dict(key_docs.KEY_DOCS)
    docs["data.seq_len"] += f" {key_docs.NO_EFFECT_MARK} wrong."
    docs["cudnn_benchmark"] = "Lets PyTorch time cuDNN algorithms."
    problems = reference.no_effect_mismatches(docs)
    assert any("'data.seq_len' is not in NO_EFFECT_KEYS" in p for p in problems)
    assert any("'cudnn_benchmark' is in NO_EFFECT_KEYS" in p for p in problems)


def test_reference_rows_show_types_defaults_and_derivations():
    text = reference.render_reference()
    assert "| `data.seq_len` | int | `2048` |" in text
    assert "| `lr_scheduler.total_steps` | int or None | derived: data.total_steps when absent |" in text
    assert "| `hybrid_zero_optimizer.reduce_bucket_size` | int | `536870912` (512 MiB) |" in text
    assert '| `ckpt.load_ckpt_info.content` | tuple of str | `("model",)` |' in text
    assert '| `model.attn_impl` (extension) | str | `"auto"` |' in text
    # a no-effect key: in its section with the reason, and in the table of its own
    assert "| `hybrid_zero_optimizer.overlap_sync_grad` | bool | `False` |" in text
    assert "| `parallel.fsdp` |" in text
    for key in NO_EFFECT_KEYS:
        assert f"| `{key}` |" in text
    for key in EXTRA_KEYS:
        assert f"| `{key}` | any | absent |" in text


def test_a_new_schema_field_reaches_the_reference(monkeypatch):
    """Whatever the schema holds when the generator runs: a new section and its derived default."""

    @dataclass(frozen=True)
    class NewSection:
        width: int = 8
        depth: int | None = None  # derived: width when absent

    monkeypatch.setitem(reference.SECTIONS, "newsection", NewSection)
    new_keys = ["newsection", "newsection.width", "newsection.depth"]
    assert [k for k in reference.missing_meanings() if k.startswith("newsection")] == new_keys
    docs = {
        **key_docs.KEY_DOCS,
        "newsection": "A section.",
        "newsection.width": "Its width.",
        "newsection.depth": "Its depth.",
    }
    assert not [p for p in reference.meaning_problems(docs) if "newsection" in p]
    text = reference.render_reference(docs)
    assert "## newsection" in text
    assert "| `newsection.depth` | int or None | derived: width when absent | Its depth. |" in text


def test_cells_escape_markdown():
    assert reference._cell("a | b") == "a \\| b"
    assert reference._cell('derived: "runs/<job>" *x*') == 'derived: "runs/&lt;job>" \\*x\\*'
    assert reference._cell("`a*b|c` <d>") == "`a*b\\|c` &lt;d>"


@pytest.mark.parametrize("stale", [True, False])
def test_cli_check(tmp_path, stale):
    out = tmp_path / "ref.md"
    text = reference.render_reference()
    out.write_text(
        text.replace("| `data.seq_len` | int | `2048`", "| `data.seq_len` | int | `4096`") if stale else text
    )
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "config_reference.py"), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if stale:
        assert run.returncode == 1
        assert "out of date" in run.stderr and reference.REGENERATE_COMMAND in run.stderr
        assert "`4096`" in run.stderr and "`2048`" in run.stderr
    else:
        assert run.returncode == 0, run.stderr


def test_cli_writes_the_file(tmp_path):
    out = tmp_path / "docs" / "ref.md"
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "config_reference.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_text() == reference.render_reference()
