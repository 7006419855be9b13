"""A minimal sampler to look at what a (fine-tuned) model says.

    python -m internevo_jax.generate --config CFG.py --ckpt PATH --prompt "TEXT" [--tokenizer tok.model]
        [--max_new_tokens 64] [--temperature 0.7 --top_p 0.9] [--seed 0] [--prompt_ids 1,2,3]

PATH is a checkpoint saved by the trainer (a step folder or a save folder: its newest complete
checkpoint) or a Hugging Face model folder (config.json + safetensors). Greedy decoding unless
--temperature > 0. No KV cache: every new token reruns the model over a fixed-length buffer
(prompt + max_new_tokens, one compilation), which is fine for checking small models and short
answers; generation cost grows with the square of the length.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _pad_length(n: int, multiple: int = 16) -> int:
    # Fixed buffer sizes keep the number of compilations at one; fused GPU attention kernels
    # also prefer lengths that are multiples of 8/16.
    return multiple * ((n + multiple - 1) // multiple)


def pick_token(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """Greedy argmax when temperature <= 0, else nucleus (top-p) sampling at that temperature."""
    if temperature <= 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / temperature
    if top_p < 1.0:
        order = jnp.argsort(-logits)
        probs = jax.nn.softmax(logits[order])
        # Keep the smallest prefix of the sorted tokens whose mass reaches top_p (at least one).
        keep = (jnp.cumsum(probs) - probs) < top_p
        logits = jnp.full_like(logits, -jnp.inf).at[order].set(jnp.where(keep, logits[order], -jnp.inf))
    return jax.random.categorical(key, logits)


@functools.partial(jax.jit, static_argnames=("model", "temperature", "top_p"))
def next_token(model, params, buffer, length, key, *, temperature: float, top_p: float) -> jax.Array:
    """The token after buffer[0, :length] (buffer [1, L], the rest padding); compiled once per L."""
    index = jnp.arange(buffer.shape[1], dtype=jnp.int32)[None]
    # Positions past the filled part are 0 so that their (ignored) tokens never look like a
    # longer sequence to dynamic NTK RoPE; causal attention keeps them out of earlier logits.
    positions = jnp.where(index < length, index, 0)
    logits = model.apply({"params": params}, buffer, positions, None)
    last = jax.lax.dynamic_index_in_dim(logits[0], length - 1, keepdims=False)
    return pick_token(last, key, temperature, top_p)


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
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token")
    total = len(prompt_ids) + max_new_tokens
    buffer = np.zeros((1, _pad_length(total)), np.int32)
    buffer[0, : len(prompt_ids)] = prompt_ids
    key = jax.random.key(seed)
    out, length = [], len(prompt_ids)
    for _ in range(max_new_tokens):
        key, sub = jax.random.split(key)
        token = int(
            next_token(
                model,
                params,
                jnp.asarray(buffer),
                jnp.int32(length),
                sub,
                temperature=float(temperature),
                top_p=float(top_p),
            )
        )
        if eos_id is not None and token == eos_id:
            break
        out.append(token)
        buffer[0, length] = token
        length += 1
    return out


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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m internevo_jax.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the training config .py of the model")
    p.add_argument("--ckpt", required=True, help="checkpoint step folder, save folder, or HF model folder")
    p.add_argument("--prompt", default="", help="prompt text (encoded with --tokenizer, BOS first)")
    p.add_argument("--prompt_ids", help="comma-separated token ids instead of --prompt (no tokenizer needed)")
    p.add_argument("--tokenizer", help="sentencepiece .model; default: data.tokenizer_path of the config")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) = greedy")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass when temperature > 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_bos", action="store_true", help="do not put the tokenizer's BOS before the prompt")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, log=lambda *a: None)
        tokenizer_path = args.tokenizer or cfg.data.tokenizer_path
        sp = None
        if tokenizer_path:
            import sentencepiece as spm

            if not os.path.isfile(tokenizer_path):
                raise ValueError(f"tokenizer {tokenizer_path} does not exist; pass --tokenizer PATH.model")
            sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
        if args.prompt_ids:
            prompt = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
        elif sp is not None:
            prompt = ([] if args.no_bos or sp.bos_id() < 0 else [sp.bos_id()]) + sp.encode(args.prompt)
        else:
            raise ValueError("no tokenizer: pass --tokenizer PATH.model (or --prompt_ids 1,2,3)")
        vocab = cfg.model.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"the prompt has token ids outside the model's vocabulary [0, {vocab})")
        model, params = load_model_params(cfg, args.ckpt)
        eos = sp.eos_id() if sp is not None and sp.eos_id() >= 0 else None
        new = generate(
            model,
            params,
            prompt,
            args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            eos_id=eos,
            seed=args.seed,
        )
    except (CheckpointError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("ids:", ",".join(str(t) for t in new))
    if sp is not None:
        print(sp.decode(new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
