"""Convert an InternEvo checkpoint folder (model_tp*_pp*.pt, optimizer_*.pt, context.pt, ...) into a
checkpoint of this trainer, offline.

    python tools/internevo2jax.py --src INTERNEVO_CKPT_DIR --tgt OUT --config TRAIN_CONFIG.py [--weights_only]

--config is the training config of the run (InternEvo's config file works unchanged): it gives the
model. The folder's tensor / pipeline / weight-parallel / FSDP layout is read from its file names.
By default everything is converted (weights from the fp32 master copies, Adam moments, loss scale,
counters and data position) into the save folder OUT, as OUT/<step>: point ckpt.save_ckpt_folder at
OUT and auto_resume continues the run on any mesh. --weights_only writes the model-only checkpoint
folder OUT, which ckpt.load_ckpt_info loads with content=("model",). Training can also read the
InternEvo folder directly (ckpt_type="internevo"); see docs/internevo_checkpoints.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


SINGLE_DEVICE = (
    "parallel.tensor.size=1",
    "parallel.pipeline.size=1",
    "parallel.weight.size=1",
    "parallel.tensor.mode='mtp'",
    "parallel.zero1.size=1",
    "parallel.zero1.fsdp=False",
)


class _Position:
    """The loader state a converted checkpoint records: its step alone, so any data settings resume it."""

    def __init__(self, step: int):
        self.step = step

    def state(self) -> dict:
        return {"step": self.step}


def internevo_to_checkpoint(src: str, tgt: str, config_path: str, *, weights_only: bool = False) -> str:
    """Read the InternEvo folder `src` for the model of `config_path` and save it as our checkpoint;
    returns the checkpoint folder. Everything (weights, optimizer, counters, data position): a
    training checkpoint in the save folder `tgt` (at `tgt/<step>`); `weights_only`: the model-only
    checkpoint folder `tgt` (as tools/hf2internevo.py writes)."""
    import jax
    import numpy as np

    from internevo_jax.checkpoint import build_checkpoint_manager, normalize_content
    from internevo_jax.checkpoint.internevo_pt.load import read_internevo
    from internevo_jax.checkpoint.model_files import save_params
    from internevo_jax.config import load_config
    from internevo_jax.trainer.build import build_trainer
    from internevo_jax.trainer.startup import apply_restored

    wanted = normalize_content(("model",) if weights_only else ("all",))
    overrides = (
        *SINGLE_DEVICE,
        f"ckpt.save_ckpt_folder='local:{os.path.abspath(tgt)}'",
        "ckpt.enable_save_ckpt=True",
        "ckpt.enable_internevo2hf_ckpt=False",
    )
    cfg = load_config(config_path, overrides=overrides, log=lambda *a: None)
    trainer = build_trainer(cfg, devices=jax.devices()[:1])  # a fresh train state to read into
    state, shardings, ctx = trainer.state, trainer.shardings, trainer.context
    restored = read_internevo(src, cfg, state, shardings, wanted, dp_size=None)
    if weights_only:
        return save_params(tgt, jax.tree.map(np.asarray, restored.params), cfg)
    state = apply_restored(restored, state, ctx, None)
    with tempfile.TemporaryDirectory() as run_dir:
        manager = build_checkpoint_manager(cfg, run_dir)
        manager.save(state, ctx, _Position(ctx.step), reason="conversion")
        manager.finalize()
    return os.path.join(tgt, str(ctx.step))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="InternEvo checkpoint folder (one step's folder)")
    p.add_argument("--tgt", required=True, help="output: a save folder (default) or a checkpoint folder")
    p.add_argument("--config", required=True, help="the run's training config (.py)")
    p.add_argument("--weights_only", action="store_true", help="convert the model weights only")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.config import ConfigError
    from internevo_jax.writable import ERROR_EXIT, check_writable

    try:
        check_writable(args.tgt, fix="Pass a --tgt folder you can write to.", error=CheckpointError)
        written = internevo_to_checkpoint(args.src, args.tgt, args.config, weights_only=args.weights_only)
    except (CheckpointError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    print(f"wrote {written} from the InternEvo checkpoint {args.src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
