"""Export a checkpoint saved by the trainer as a Hugging Face model folder.

    python tools/convert2hf.py --src CKPT_STEP_DIR --tgt HF_DIR [--tokenizer tokenizer.model]
        [--dtype bf16|fp32|fp16] [--max_shard_size 5GB] [--config CFG.py] [--remote_code DIR] [--overwrite]

INTERNLM is written as LlamaForCausalLM with attention_bias=true, LLAMA2 / LLAMA as LlamaForCausalLM,
QWEN2, QWEN3 and GEMMA as transformers' own classes, INTERNLM2, INTERNLM3 and BAICHUAN2 as their
remote-code classes (see --remote_code); the MoE types MIXTRALMOE, QWEN2MOE and QWEN3MOE as
MixtralForCausalLM, Qwen2MoeForCausalLM and Qwen3MoeForCausalLM (INTERNLM_MoE has no HF class).
The folder appears only once complete. See docs/hf.md.
"""

from __future__ import annotations

import argparse
import logging
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


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    import jax.numpy as jnp

    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.checkpoint.model_files import config_from_saved, load_params
    from internevo_jax.config import ConfigError, load_config
    from internevo_jax.hf import export_hf

    cast = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}[args.dtype]
    try:
        params, saved, folder = load_params(args.src, dtype=cast)
        if args.config:
            cfg = load_config(args.config, log=lambda *a: None)
        elif saved is not None:
            cfg = config_from_saved(saved, f"{folder}/config")
        else:
            raise CheckpointError(
                f"The checkpoint at {folder} holds no saved config; pass --config with the "
                "training config it was trained with."
            )
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
        return 1
    print(f"wrote {config['architectures'][0]} ({cfg.model_type}, {args.dtype}) from {folder} to {args.tgt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
