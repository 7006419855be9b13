"""python -m internevo_jax.generate: greedy output equals the argmax continuation computed directly."""

from __future__ import annotations

import numpy as np
import pytest
from hf_helpers import random_params, tiny_cfg

from internevo_jax import generate as gen
from internevo_jax.checkpoint.model_files import save_params
from internevo_jax.hf import export_hf

CONFIG = """
model_type = "{model_type}"
model = dict(num_layers=2, hidden_size=48, num_attention_heads=6, num_kv_attention_heads=2, vocab_size=101,
             mlp_ratio=80 / 48, multiple_of=16, dtype="torch.float32", no_bias={no_bias},
             use_dynamic_ntk_rope={ntk}, max_position_embeddings=8)
"""


def direct_greedy(cfg, params, prompt, steps):
    """Argmax continuation by running the model on the growing, unpadded sequence (one compile per length)."""
    import jax
    import jax.numpy as jnp

    from internevo_jax.model import build_model

    apply = jax.jit(build_model(cfg).apply)
    ids = list(prompt)
    for _ in range(steps):
        logits = apply({"params": params}, jnp.asarray([ids], jnp.int32))
        ids.append(int(np.argmax(np.asarray(logits[0, -1]))))
    return ids[len(prompt) :]


def is_argmax_continuation(cfg, params, prompt, new):
    """One causal forward over prompt + new: each new token must be the argmax after the tokens before it."""
    import jax
    import jax.numpy as jnp

    from internevo_jax.model import build_model

    logits = np.asarray(
        jax.jit(build_model(cfg).apply)({"params": params}, jnp.asarray([prompt + new], jnp.int32))
    )
    return [int(np.argmax(logits[0, len(prompt) - 1 + j])) for j in range(len(new))] == new


def run_cli(tmp_path, capsys, model_type, prompt, steps, ntk=False):
    cfg = tiny_cfg(model_type, use_dynamic_ntk_rope=ntk, max_position_embeddings=8)
    params = random_params(cfg, seed=3)
    save_params(str(tmp_path / "ckpt"), params, cfg)
    config = tmp_path / "cfg.py"
    config.write_text(CONFIG.format(model_type=model_type, no_bias=model_type != "INTERNLM", ntk=ntk))
    argv = [
        "--config",
        str(config),
        "--ckpt",
        str(tmp_path / "ckpt"),
        "--prompt_ids",
        ",".join(map(str, prompt)),
        "--max_new_tokens",
        str(steps),
    ]
    assert gen.main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert line.startswith("ids: ")
    return cfg, params, [int(t) for t in line[5:].split(",")]


@pytest.mark.parametrize("model_type", ["INTERNLM2", "LLAMA2", "INTERNLM"])
def test_cli_greedy_is_the_argmax_continuation(tmp_path, capsys, model_type):
    prompt = [5, 17, 42, 8]
    cfg, params, new = run_cli(tmp_path, capsys, model_type, prompt, 12)
    assert len(new) == 12 and is_argmax_continuation(cfg, params, prompt, new)


def test_cli_greedy_with_dynamic_ntk_matches_the_growing_sequence(tmp_path, capsys):
    """With dynamic NTK the base depends on the current length: compare step by step (lengths 6..9 cross 8)."""
    prompt = [5, 17, 42, 8, 99, 3]
    cfg, params, new = run_cli(tmp_path, capsys, "INTERNLM", prompt, 4, ntk=True)
    assert new == direct_greedy(cfg, params, prompt, 4)


def test_generate_reads_hf_folders_and_stops_at_eos(tmp_path):
    from internevo_jax.model import build_model

    cfg = tiny_cfg("INTERNLM2")
    params = random_params(cfg, seed=4)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    model, loaded = gen.load_model_params(cfg, str(tmp_path / "hf"))
    prompt = [1, 2, 3]
    greedy = gen.generate(model, loaded, prompt, 6)
    assert is_argmax_continuation(cfg, params, prompt, greedy)
    cut = gen.generate(model, loaded, prompt, 6, eos_id=greedy[2])
    assert cut == greedy[: greedy.index(greedy[2])]
    sampled = gen.generate(build_model(cfg), loaded, prompt, 6, temperature=0.8, top_p=0.9, seed=1)
    assert sampled == gen.generate(model, loaded, prompt, 6, temperature=0.8, top_p=0.9, seed=1)
    assert all(0 <= t < 101 for t in sampled)


def test_top_p_keeps_only_the_nucleus():
    import jax
    import jax.numpy as jnp

    logits = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
    keys = jax.random.split(jax.random.key(0), 200)
    draws = set(np.asarray(jax.vmap(lambda k: gen.pick_token(logits, k, 1.0, 0.7))(keys)).tolist())
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7; the tail is never drawn
    assert int(gen.pick_token(logits, jax.random.key(0), 0.0, 0.7)) == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    config = tmp_path / "cfg.py"
    config.write_text(CONFIG.format(model_type="LLAMA2", no_bias=True, ntk=False))
    assert gen.main(["--config", str(config), "--ckpt", str(tmp_path / "missing"), "--prompt_ids", "1"]) == 1
    assert "error: No checkpoint at" in capsys.readouterr().err
    assert gen.main(["--config", str(config), "--ckpt", str(tmp_path), "--prompt", "hi"]) == 1
    assert "no tokenizer" in capsys.readouterr().err
    assert gen.main(["--config", str(config), "--ckpt", str(tmp_path), "--prompt_ids", "1,500"]) == 1
    assert "outside the model's vocabulary" in capsys.readouterr().err
