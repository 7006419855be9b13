"""Generate text from a (fine-tuned) model, with a key/value cache.

    python -m internevo_jax.generate --config CFG.py [--ckpt PATH] --prompt "TEXT" [--prompt "MORE"]
        [--prompt_file prompts.txt] [--prompt_ids 1,2,3 --prompt_ids 4,5] [--tokenizer tok.model]
        [--max_new_tokens 64 | --max_length 100] [--greedy | --do_sample] [--temperature 0.7]
        [--top_k 50] [--top_p 0.9] [--repetition_penalty 1.1] [--length_penalty 1.0]
        [--eos_id 2,0] [--bos_id 1] [--batch_size 4] [--seed 0] [--no_bos]

PATH is a checkpoint saved by the trainer (a step folder or a save folder: its newest complete
checkpoint) or a Hugging Face model folder (config.json + safetensors); without --ckpt,
generation.ckpt_folder, else ckpt.save_ckpt_folder of the config. The config's `generation` dict
(InternEvo's keys) gives the defaults and flags override them; without the dict decoding is greedy
for 64 new tokens. docs/generation.md has the details.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp

from internevo_jax.generation import Sampling, choose, generate_ids, strip_eos


def pick_token(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """One token for 1-D logits: greedy when temperature <= 0, else top-p sampling at that temperature."""
    sampling = Sampling(do_sample=temperature > 0, temperature=max(temperature, 1e-6), top_p=top_p)
    return choose(logits[None], key, sampling)[0]


def generate(
    model,
    params: dict,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    seed: int = 0,
) -> list[int]:
    """The new token ids after `prompt_ids` (stops after max_new_tokens or at eos_id, which is dropped)."""
    eos = () if eos_id is None else (eos_id,)
    sampling = Sampling(do_sample=temperature > 0, temperature=max(temperature, 1e-6), top_p=top_p)
    new = generate_ids(model, params, [list(prompt_ids)], [max_new_tokens], sampling, eos_ids=eos, seed=seed)[
        0
    ]
    return strip_eos(new, eos)


def load_model_params(cfg: Any, path: str) -> tuple[Any, dict]:
    """(model, params) for `cfg` from a trainer checkpoint or an HF folder at `path`."""
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.checkpoint.model_files import load_params
    from internevo_jax.hf import load_hf_params
    from internevo_jax.hf.export import check_params_fit
    from internevo_jax.model import abstract_params, build_model, in_layout_of

    model = build_model(cfg)
    abstract = abstract_params(model)
    if os.path.exists(os.path.join(path, "config.json")):
        params = load_hf_params(path, cfg, abstract)
    else:
        params, _, folder = load_params(path)
        check_params_fit(params, model, folder)
        params = in_layout_of(params, abstract)  # the saved layout (scanned or not) -> the config's
    if not params:
        raise CheckpointError(f"no parameters found at {path}")
    return model, jax.tree.map(jnp.asarray, params)


def _ids(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _id_groups(text: str) -> list[list[int]]:
    """Groups of ids separated by ";": "1,2,3;4,5" -> [[1, 2, 3], [4, 5]]."""
    return [_ids(group) for group in text.split(";") if group.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m internevo_jax.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the training config .py of the model")
    p.add_argument("--ckpt", help="checkpoint step folder, save folder, or HF model folder")
    p.add_argument(
        "--prompt", action="append", help="prompt text (encoded with --tokenizer, BOS first); repeatable"
    )
    p.add_argument("--prompt_file", help="a text file with one prompt per line")
    p.add_argument(
        "--prompt_ids",
        action="append",
        help='comma-separated token ids instead of text (no tokenizer needed); repeatable, or "1,2;3,4"',
    )
    p.add_argument("--tokenizer", help="sentencepiece .model; default: data.tokenizer_path of the config")
    p.add_argument("--max_new_tokens", type=int, help="new tokens per prompt (wins over max_length)")
    p.add_argument("--max_length", type=int, help="tokens per row, prompt included (generation.max_length)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--do_sample", action="store_const", const=True, help="sample the next token")
    mode.add_argument("--greedy", dest="do_sample", action="store_const", const=False, help="take the argmax")
    p.add_argument("--temperature", type=float, help="sampling temperature; 0 = greedy")
    p.add_argument("--top_k", type=int, help="sample among the k most likely tokens; 0 = all")
    p.add_argument("--top_p", type=float, help="nucleus sampling mass (1 = off)")
    p.add_argument("--repetition_penalty", type=float, help="penalty of tokens already in the row (1 = off)")
    p.add_argument("--length_penalty", type=float, help="InternEvo's length penalty (1 = off)")
    p.add_argument("--eos_id", type=_ids, help="comma-separated ids that end a row (generation.eos_id)")
    p.add_argument("--bos_id", type=int, help="id put before a text prompt; pads finished rows")
    p.add_argument("--batch_size", type=int, help="prompts per batch (generation.batch_size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_bos", action="store_true", help="do not put the BOS id before a text prompt")
    return p.parse_args(argv)


def _tokenizer(path: str | None):
    if not path:
        return None
    import sentencepiece as spm

    if not os.path.isfile(path):
        raise ValueError(f"tokenizer {path} does not exist; pass --tokenizer PATH.model")
    return spm.SentencePieceProcessor(model_file=path)


def _prompts(args: argparse.Namespace, sp, bos: int | None) -> list[list[int]]:
    """Token ids of every prompt: --prompt_ids groups, then --prompt texts, then --prompt_file lines."""
    prompts = [group for text in args.prompt_ids or () for group in _id_groups(text)]
    texts = list(args.prompt or ())
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            texts += [line.rstrip("\r\n") for line in f if line.strip()]
    if not prompts and not texts:
        texts = [""]  # BOS alone: what the model writes unprompted
    if texts and sp is None:
        raise ValueError("no tokenizer: pass --tokenizer PATH.model (or --prompt_ids 1,2,3)")
    start = [] if bos is None else [bos]
    prompts += [start + sp.encode(text) for text in texts]
    if any(not p for p in prompts):
        raise ValueError("a prompt is empty: give at least one token (or drop --no_bos)")
    return prompts


def _checkpoint_path(args: argparse.Namespace, cfg) -> str:
    """--ckpt, else generation.ckpt_folder, else ckpt.save_ckpt_folder (its newest checkpoint)."""
    from internevo_jax.checkpoint.storage import LocalLocation, parse_location

    if args.ckpt:
        return args.ckpt
    from_generation = cfg.generation is not None and cfg.generation.ckpt_folder
    key = "generation.ckpt_folder" if from_generation else "ckpt.save_ckpt_folder"
    given = from_generation or cfg.ckpt.save_ckpt_folder
    if not given:
        raise ValueError("no checkpoint: pass --ckpt PATH (or set generation.ckpt_folder in the config)")
    location = parse_location(given, key=key)
    if not isinstance(location, LocalLocation):
        raise ValueError(
            f"{key}={given!r}: generate reads local folders; copy the checkpoint here and pass --ckpt"
        )
    if not os.path.exists(location.path):
        raise ValueError(f"no checkpoint: {key}={given!r} does not exist; pass --ckpt PATH")
    return location.path


def _warn_lengths(prompts: list[list[int]], budgets: list[int], settings, max_positions: int) -> None:
    for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
        if settings.max_new_tokens is None and budget == 0:
            print(
                f"warning: prompt {i} has {len(prompt)} tokens, max_length={settings.generation.max_length} "
                "leaves no room for new ones; nothing is generated for it",
                file=sys.stderr,
            )
    longest = max(len(p) + b for p, b in zip(prompts, budgets, strict=True))
    if longest > max_positions:
        print(
            f"warning: rows reach {longest} tokens, past model.max_position_embeddings={max_positions}; "
            "RoPE positions beyond it were never trained (dynamic NTK RoPE, if on, stretches them)",
            file=sys.stderr,
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.config import ConfigError, load_config
    from internevo_jax.generation.settings import resolve_settings

    try:
        cfg = load_config(args.config, log=lambda *a: None)
        sp = _tokenizer(args.tokenizer or cfg.data.tokenizer_path)
        settings = resolve_settings(
            cfg,
            args,
            tokenizer_bos=sp.bos_id() if sp is not None and sp.bos_id() >= 0 else None,
            tokenizer_eos=sp.eos_id() if sp is not None and sp.eos_id() >= 0 else None,
        )
        prompts = _prompts(args, sp, settings.prompt_bos)
        vocab = cfg.model.vocab_size
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise ValueError(f"the prompt has token ids outside the model's vocabulary [0, {vocab})")
        budgets = settings.budgets(prompts)
        _warn_lengths(prompts, budgets, settings, cfg.model.max_position_embeddings)
        model, params = load_model_params(cfg, _checkpoint_path(args, cfg))
        outputs = generate_ids(
            model,
            params,
            prompts,
            budgets,
            settings.sampling(),
            eos_ids=settings.eos_ids,
            pad_id=settings.generation.bos_id,
            batch_size=settings.batch_size,
            seed=settings.seed,
        )
    except (CheckpointError, ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for new in outputs:
        new = strip_eos(new, settings.eos_ids)
        print("ids:", ",".join(str(t) for t in new))
        if sp is not None:
            print(sp.decode(new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
