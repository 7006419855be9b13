"""Import a Hugging Face model folder as a checkpoint the trainer loads.

    python tools/hf2internevo.py --src HF_DIR --tgt OUT_DIR [--model_type TYPE] [--dtype bf16|fp16|fp32]
        [--overwrite]

Reads LlamaForCausalLM (INTERNLM / LLAMA2 / LLAMA), InternLM2ForCausalLM, InternLM3ForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM, GemmaForCausalLM and BaichuanForCausalLM folders, and the
mixture-of-experts MixtralForCausalLM (MIXTRALMOE), Qwen2MoeForCausalLM (QWEN2MOE) and
Qwen3MoeForCausalLM (QWEN3MOE).

Reads config.json and the (sharded) safetensors; writes OUT_DIR/model (fp32 params), OUT_DIR/config
and the COMMITTED marker, then prints the model settings to put in the training config, which
loads it with ckpt = dict(load_ckpt_info=dict(path="local:OUT_DIR", content=("model",), ckpt_type="internevo"),
auto_resume=False). See docs/hf.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

DTYPES = {"bf16": "torch.bfloat16", "fp16": "torch.float16", "fp32": "torch.float32"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="HF model folder (config.json + *.safetensors)")
    p.add_argument("--tgt", required=True, help="output checkpoint folder")
    p.add_argument(
        "--model_type",
        help="a model type of the folder's layout (e.g. LLAMA for a LLaMA folder); default: the layout's own "
        "(INTERNLM for LLaMA folders with attention biases, else LLAMA2; QWEN2, GEMMA, ... for the others)",
    )
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES), help="compute dtype in the saved config")
    p.add_argument("--overwrite", action="store_true", help="replace --tgt if it exists")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.checkpoint.model_files import save_params
    from internevo_jax.config import ConfigError
    from internevo_jax.hf import describe_model, import_hf
    from internevo_jax.writable import ERROR_EXIT, check_writable

    try:
        check_writable(args.tgt, fix="Pass a --tgt folder you can write to.", error=CheckpointError)
        params, cfg = import_hf(args.src, args.model_type, dtype=DTYPES[args.dtype])
        save_params(args.tgt, params, cfg, overwrite=args.overwrite)
    except (CheckpointError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    print(f"wrote {cfg.model_type} weights from {args.src} to {args.tgt}")
    print("model settings for the training config:\n")
    print(describe_model(cfg))
    print(
        f'\nckpt = dict(auto_resume=False, load_ckpt_info=dict(path="local:{Path(args.tgt).resolve()}", '
        'content=("model",), ckpt_type="internevo"))'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
