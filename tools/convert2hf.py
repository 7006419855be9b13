"""Export a checkpoint saved by the trainer as a Hugging Face model folder.

    python tools/convert2hf.py --src CKPT_STEP_DIR --tgt HF_DIR [--tokenizer tokenizer.model]
        [--dtype bf16|fp32|fp16] [--max_shard_size 5GB] [--config CFG.py] [--remote_code DIR] [--overwrite]
        [--allow_vocab_mismatch]

INTERNLM is written as LlamaForCausalLM with attention_bias=true, LLAMA2 / LLAMA as LlamaForCausalLM,
QWEN2, QWEN3 and GEMMA as transformers' own classes, INTERNLM2, INTERNLM3 and BAICHUAN2 as their
remote-code classes (see --remote_code); the MoE types MIXTRALMOE, QWEN2MOE and QWEN3MOE as
MixtralForCausalLM, Qwen2MoeForCausalLM and Qwen3MoeForCausalLM (INTERNLM_MoE has no HF class).
The folder appears only once complete. See docs/hf.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--src", required=True, help="checkpoint step folder (<save_ckpt_folder>/<step>) or a save folder"
    )
    p.add_argument("--tgt", required=True, help="output folder for config.json and the *.safetensors shards")
    p.add_argument("--tokenizer", help="sentencepiece .model to copy next to the weights")
    p.add_argument(
        "--allow_vocab_mismatch",
        action="store_true",
        help="export even when the tokenizer's piece count differs from the model's vocab_size (a warning)",
    )
    p.add_argument(
        "--dtype", default="bf16", choices=("bf16", "fp32", "fp16"), help="dtype of the exported weights"
    )
    p.add_argument(
        "--max_shard_size", default="5GB", help="largest shard file, e.g. 5GB, 500MB, 2GiB (default 5GB)"
    )
    p.add_argument("--config", help="training config .py; default: the config saved in the checkpoint")
    p.add_argument(
        "--remote_code",
        help="folder whose .py files (the model's remote modeling code) are copied into --tgt",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --tgt if it exists")
    return p.parse_args(argv)


def check_tokenizer(path: str, vocab_size: int, allow_mismatch: bool) -> None:
    """Refuse a tokenizer whose piece count is not the model's vocab_size, unless allowed (then warn)."""
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.data.tokenizer import vocab_mismatch
    from internevo_jax.hf.tokenizer import piece_count

    problem = vocab_mismatch(piece_count(path), vocab_size, exact=True)
    if problem is None:
        return
    if allow_mismatch:
        logging.getLogger(__name__).warning(
            "--tokenizer %s %s; exported anyway (--allow_vocab_mismatch)", path, problem
        )
        return
    raise CheckpointError(
        f"--tokenizer {path} {problem}. Pass the tokenizer the model was trained with (data.tokenizer_path "
        "of its training config), or add --allow_vocab_mismatch to export this pair anyway (e.g. for a "
        "vocabulary padded on purpose)."
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    import jax.numpy as jnp

    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.checkpoint.model_files import (
        config_from_saved,
        read_config_dict,
        read_model,
        resolve_checkpoint,
    )
    from internevo_jax.config import ConfigError, load_config
    from internevo_jax.hf import export_hf
    from internevo_jax.writable import ERROR_EXIT, check_writable

    cast = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}[args.dtype]
    try:
        folder = resolve_checkpoint(args.src)
        saved = read_config_dict(folder)
        if args.config:
            cfg = load_config(args.config, log=lambda *a: None)
        elif saved is not None:
            cfg = config_from_saved(saved, f"{folder}/config")
        else:
            raise CheckpointError(
                f"The checkpoint at {folder} holds no saved config; pass --config with the "
                "training config it was trained with."
            )
        check_writable(
            os.path.dirname(os.path.abspath(args.tgt)),
            fix="Pass a --tgt in a folder you can write to.",
            error=CheckpointError,
        )
        if args.tokenizer:
            check_tokenizer(args.tokenizer, cfg.model.vocab_size, args.allow_vocab_mismatch)
        params = read_model(folder, dtype=cast)
        config = export_hf(
            params,
            cfg,
            args.tgt,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            tokenizer=args.tokenizer,
            remote_code=args.remote_code,
            overwrite=args.overwrite,
            source=folder,
        )
    except (CheckpointError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    print(f"wrote {config['architectures'][0]} ({cfg.model_type}, {args.dtype}) from {folder} to {args.tgt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
