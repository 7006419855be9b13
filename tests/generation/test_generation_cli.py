"""python -m internevo_jax.generate: the config's generation dict as defaults, batched text and id
prompts, and one-line errors for bad arguments."""

from __future__ import annotations

import os

import pytest
from gen_helpers import random_params

from internevo_jax import generate as gen
from internevo_jax.checkpoint.model_files import save_params
from internevo_jax.config import load_config
from internevo_jax.generation import Sampling, generate_ids
from internevo_jax.model import build_model

TOKENIZER = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "tokenizers", "tokenizer_internlm.model"
)
# InternLM1's tokenizer (103168 ids, BOS 1, EOS 2); max_position_embeddings far below max_length
CONFIG = """
model_type = "INTERNLM2"
model = dict(num_layers=2, hidden_size=32, num_attention_heads=4, num_kv_attention_heads=2, vocab_size=103168,
             mlp_ratio=2, multiple_of=16, dtype="torch.float32", no_bias=True, max_position_embeddings=16)
{data}
generation = dict({generation})
"""


def write_config(tmp_path, generation: str = "", *, tokenizer: bool = True) -> str:
    """The config file; without `tokenizer` it names none (prompts are then given as ids)."""
    path = tmp_path / "cfg.py"
    data = f"data = dict(tokenizer_path={os.path.abspath(TOKENIZER)!r})" if tokenizer else ""
    path.write_text(CONFIG.format(data=data, generation=generation))
    return str(path)


@pytest.mark.skipif(not os.path.isfile(TOKENIZER), reason="the InternLM tokenizer is not available")
def test_batched_prompts_follow_the_generation_dict(tmp_path, capsys):
    plain = write_config(tmp_path)
    cfg = load_config(plain, log=lambda *a: None)
    params = random_params(cfg, seed=5)
    save_params(str(tmp_path / "ckpt"), params, cfg)
    config = write_config(
        tmp_path,
        f'ckpt_folder="local:{tmp_path / "ckpt"}", do_sample=False, batch_size=2, max_length=20, eos_id=[2]',
    )
    (tmp_path / "prompts.txt").write_text("import os\n\nclass Foo:\n")
    long = ",".join(["7"] * 21)  # already past max_length: nothing is generated for it
    argv = ["--config", config, "--prompt", "def main(", "--prompt", "hello world"]
    argv += ["--prompt_file", str(tmp_path / "prompts.txt"), "--prompt_ids", f"1,5,9;{long}"]
    assert gen.main(argv) == 0
    out, err = capsys.readouterr()
    ids = [line[5:] for line in out.splitlines() if line.startswith("ids: ")]
    assert len(ids) == 6
    assert "prompt 1 has 21 tokens" in err and "past model.max_position_embeddings=16" in err

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    prompts = [[1, 5, 9], [7] * 21] + [
        [1] + sp.encode(t) for t in ("def main(", "hello world", "import os", "class Foo:")
    ]
    budgets = [max(0, 20 - len(p)) for p in prompts]
    want = generate_ids(
        build_model(cfg), params, prompts, budgets, Sampling(), eos_ids=(2,), pad_id=1, batch_size=2
    )
    for printed, (new, budget) in zip(ids, zip(want, budgets, strict=True), strict=True):
        assert printed == ",".join(map(str, new[:-1] if new and new[-1] == 2 else new))
        assert len(new) == budget or new[-1] == 2
    assert ids[1] == ""  # the long prompt got nothing


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_new_tokens", "-5"], "error: --max_new_tokens must be 1 or more, got -5"),
        (["--prompt_ids", "1,200000"], "outside the model's vocabulary [0, 103168)"),
        (["--top_p", "1.5"], "error: --top_p must be in (0, 1]"),
        (["--top_k", "-2"], "error: --top_k must be 0 (off) or more"),
        (["--temperature", "-1"], "error: --temperature must be 0 (greedy) or more"),
        (["--do_sample", "--temperature", "0"], "error: --temperature must be greater than 0 when sampling"),
        (["--batch_size", "0"], "error: --batch_size must be 1 or more"),
        (["--eos_id", "2,999999"], "error: --eos_id has 999999, outside the model's vocabulary"),
        (["--max_length", "0"], "error: --max_length must be 1 or more"),
    ],
)
def test_bad_arguments_get_one_error_line(tmp_path, capsys, extra, message):
    config = write_config(tmp_path, "do_sample=True", tokenizer=False)
    argv = ["--config", config, "--ckpt", str(tmp_path / "missing"), "--prompt_ids", "1,2"] + extra
    assert gen.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_generation_dict_is_a_config_error(tmp_path, capsys):
    config = write_config(tmp_path, "do_sample=True, temperature=0", tokenizer=False)
    assert gen.main(["--config", config, "--prompt_ids", "1,2"]) == 1
    err = capsys.readouterr().err
    assert "'generation.temperature' must be greater than 0 when sampling" in err and err.count("\n") == 1


def test_argument_of_the_wrong_type_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gen.main(["--config", write_config(tmp_path, tokenizer=False), "--max_new_tokens", "many"])
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err


def test_no_checkpoint_anywhere_is_named(tmp_path, capsys):
    config = write_config(tmp_path, "do_sample=False", tokenizer=False)
    assert gen.main(["--config", config, "--prompt_ids", "1,2"]) == 1
    err = capsys.readouterr().err
    assert "error: no checkpoint: ckpt.save_ckpt_folder=" in err and "does not exist; pass --ckpt PATH" in err


def test_prompt_past_max_position_embeddings_warns_without_a_tokenizer(tmp_path, capsys):
    config = write_config(tmp_path, "do_sample=False", tokenizer=False)
    cfg = load_config(config, log=lambda *a: None)
    save_params(str(tmp_path / "ckpt"), random_params(cfg, seed=1), cfg)
    long = ",".join(["7"] * 17)  # max_position_embeddings=16
    argv = [
        "--config",
        config,
        "--ckpt",
        str(tmp_path / "ckpt"),
        "--prompt_ids",
        long,
        "--max_new_tokens",
        "2",
    ]
    assert gen.main(argv) == 0
    out, err = capsys.readouterr()
    assert "warning: rows reach 19 tokens, past model.max_position_embeddings=16" in err
    assert err.count("\n") == 1 and len([line for line in out.splitlines() if line.startswith("ids: ")]) == 1
