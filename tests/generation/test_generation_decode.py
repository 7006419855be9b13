"""The KV-cache decode path against full recompute: greedy tokens of every family against a full
forward and against transformers' own `generate`, batched rows against each prompt alone, and the
cache's logits against a full forward's (fp32). Dynamic NTK RoPE (where generation reruns the model
past max_position_embeddings) is covered by tests/hf/test_hf_generate.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gen_helpers import PROMPTS, VOCAB, argmax_mismatches, forward_logits, random_params, tiny_cfg

from internevo_jax.generation import Sampling, decode_model, generate_ids
from internevo_jax.model import build_model
from internevo_jax.model.kv_cache import CACHE

NEW = 10
FAMILIES = {
    "internlm2": ("INTERNLM2", {}),
    "llama2": ("LLAMA2", {}),
    "qwen2-window": (
        "QWEN2",
        dict(use_sliding_window=True, sliding_window=3, max_window_layers=1, num_layers=3),
    ),
    "qwen3": ("QWEN3", dict(head_dim=16)),
    "gemma": ("GEMMA", dict(head_dim=16, use_swiglu=False, add_unit_offset=True)),
    "mixtral-moe": (
        "MIXTRALMOE",
        # ragged_dot: the same routing, a quicker compile on CPU than the tiled grouped matmul
        dict(
            num_layers=1,
            num_experts=4,
            top_k=2,
            moe_type="Dropless",
            moe_layer_kwargs={"grouped_matmul": "ragged_dot"},
        ),
    ),
}


@functools.cache
def family(name: str):
    model_type, keys = FAMILIES[name]
    cfg = tiny_cfg(model_type, **keys)
    return cfg, build_model(cfg), random_params(cfg, seed=len(name))


@functools.cache
def greedy(name: str, strategy: str = "cache") -> list[list[int]]:
    _, model, params = family(name)
    return generate_ids(model, params, PROMPTS, [NEW] * len(PROMPTS), Sampling(), strategy=strategy)


def alone(name: str, prompt: list[int]) -> list[int]:
    """Greedy tokens of `prompt` in a batch whose other rows generate nothing (the batch's shape, so
    the compiled loop is the one of `greedy(name)`)."""
    _, model, params = family(name)
    rows = [prompt] + [[0]] * (len(PROMPTS) - 1)
    return generate_ids(model, params, rows, [NEW] + [0] * (len(PROMPTS) - 1), Sampling())[0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_greedy_cache_tokens_are_the_full_forward_argmax(name):
    outputs = greedy(name)
    assert [len(o) for o in outputs] == [NEW] * len(PROMPTS)
    _, model, params = family(name)
    assert argmax_mismatches(model, params, PROMPTS, outputs) == []
    # batched prompts of different lengths give what each prompt gives alone
    assert [alone(name, list(p)) for p in PROMPTS] == outputs


def test_cache_logits_match_a_full_forward():
    """Qwen3 (q/k norms, head_dim apart from hidden / heads): the logits of the prefill and of
    every decode step of rows of 4, 2 and 7 tokens against one full forward over the rows."""
    _, model, params = family("qwen3")
    model, params = decode_model(model, params)
    rng = np.random.default_rng(0)
    rows = [list(p) + rng.integers(0, VOCAB, NEW).tolist() for p in PROMPTS]
    want = forward_logits(model, params, rows)  # the argmax test's shape: compiled once
    b, width, total = len(rows), max(map(len, PROMPTS)), max(map(len, rows))
    lengths = np.asarray([len(p) for p in PROMPTS])
    ids = np.zeros((b, width), np.int32)
    for i, p in enumerate(PROMPTS):
        ids[i, : len(p)] = p
    pos = np.broadcast_to(np.arange(width, dtype=np.int32), (b, width))

    @jax.jit
    def apply(cache, tokens, positions, segments):
        variables = {"params": params} if cache is None else {"params": params, CACHE: cache}
        return model.apply(variables, tokens, positions, segments, mutable=[CACHE])

    full = jnp.zeros((b, total), jnp.int32)
    shapes = jax.eval_shape(apply, None, full, full, full + 1)[1][CACHE]
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    logits, variables = apply(cache, ids, pos, (pos < lengths[:, None]).astype(np.int32))
    rows_index = np.arange(b)
    got, expect = [np.asarray(logits)[rows_index, lengths - 1]], [want[rows_index, lengths - 1]]
    for i in range(NEW - 1):
        at = (lengths + i).astype(np.int32)
        tokens = np.asarray([r[a] for r, a in zip(rows, at, strict=True)], np.int32)
        logits, variables = apply(variables[CACHE], tokens[:, None], at[:, None], None)
        got.append(np.asarray(logits)[:, 0])
        expect.append(want[rows_index, at])
    got, expect = np.asarray(got), np.asarray(expect)
    assert np.abs(got - expect).max() < 1e-4 * max(1.0, np.abs(expect).max())


def test_eos_ends_a_row_and_pads_it():
    """A row stops at its first eos (kept in the output); the other rows run on unchanged."""
    outputs = greedy("llama2")
    eos = outputs[1][3]
    _, model, params = family("llama2")
    cut = generate_ids(model, params, PROMPTS, [NEW] * 3, Sampling(), eos_ids=(eos,))
    for full, short in zip(outputs, cut, strict=True):
        end = full.index(eos) + 1 if eos in full else len(full)
        assert short == full[:end]
    assert len(cut[1]) == 4


def test_max_length_budget_per_row():
    """Budgets differ per row (InternEvo's max_length counts the prompt): each row gets its own."""
    _, model, params = family("llama2")
    budgets = [10 - len(p) for p in PROMPTS]
    outputs = generate_ids(model, params, PROMPTS, budgets, Sampling())
    assert outputs == [o[:n] for o, n in zip(greedy("llama2"), budgets, strict=True)]


@pytest.mark.parametrize("name", ["llama2", "gemma", "qwen3"])
def test_greedy_equals_transformers_generate(tmp_path, name):
    """The same random weights exported to a Hugging Face folder: transformers' own greedy
    `generate` (its own KV cache) gives the same tokens."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from internevo_jax.hf import export_hf

    cfg, _, params = family(name)
    export_hf(params, cfg, str(tmp_path), dtype="fp32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    hf.generation_config.eos_token_id = None  # run every row to NEW tokens, as above
    for prompt, ours in zip(PROMPTS, greedy(name), strict=True):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, pad_token_id=0)
        assert out[0, len(prompt) :].tolist() == ours


def test_greedy_with_penalties_follows_the_numpy_rules_step_by_step():
    """Repetition penalty over prompt + output so far, InternEvo's length penalty (eos ids exempt),
    then the argmax: every step checked on a full forward's logits with NumPy."""
    _, model, params = family("internlm2")
    s, eos = Sampling(repetition_penalty=4.0, length_penalty=0.7), (7,)
    outputs = generate_ids(model, params, PROMPTS, [NEW] * 3, s, eos_ids=eos)
    assert outputs != greedy("internlm2")  # the penalties changed the tokens
    logits = forward_logits(model, params, [list(p) + o for p, o in zip(PROMPTS, outputs, strict=True)])
    for b, (prompt, new) in enumerate(zip(PROMPTS, outputs, strict=True)):
        for j, tok in enumerate(new):
            x = logits[b, len(prompt) - 1 + j].astype(np.float64)
            seen = np.zeros(x.shape, bool)
            seen[list(prompt) + new[:j]] = True
            x = np.where(seen, np.where(x > 0, x / 4.0, x * 4.0), x)
            x = np.where(np.isin(np.arange(x.size), eos), x, x / float(len(prompt) + j) ** 0.7)
            assert int(np.argmax(x)) == tok, (b, j)
        assert len(new) == NEW or new[-1] in eos
