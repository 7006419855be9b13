"""Write a checkpoint of this trainer as an InternEvo checkpoint folder, to go back to InternEvo.

    python tools/jax2internevo.py --src CKPT --tgt OUT --tensor N --pipeline M [--data D] [--zero1 Z]
        [--isp --weight W] [--fsdp] [--config TRAIN_CONFIG.py]

--src is a checkpoint step folder (<save_ckpt_folder>/<step>) or a save folder (its newest
complete checkpoint). The sizes are those of the InternEvo run that will load OUT: tensor and
pipeline parallel sizes, the data-parallel size and zero1 size of its optimizer files (zero1
default: every data rank), isp with its weight-parallel size, or FSDP over the data ranks (weights
only: FSDP's optimizer format is not written). InternEvo loads OUT with load_ckpt_info
content=("all",). See docs/internevo_checkpoints.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="checkpoint step folder or save folder")
    p.add_argument("--tgt", required=True, help="output InternEvo checkpoint folder")
    p.add_argument("--tensor", type=int, default=1, help="InternEvo tensor-parallel size (default 1)")
    p.add_argument("--pipeline", type=int, default=1, help="InternEvo pipeline-parallel size (default 1)")
    p.add_argument("--data", type=int, default=1, help="InternEvo data-parallel size (default 1)")
    p.add_argument("--zero1", type=int, default=0, help="zero1 size of the optimizer files (default: --data)")
    p.add_argument("--isp", action="store_true", help="tensor mode isp (weights split over --weight)")
    p.add_argument("--weight", type=int, default=1, help="isp weight-parallel size (default 1)")
    p.add_argument("--fsdp", action="store_true", help="FSDP model shards over the --data ranks")
    p.add_argument("--config", help="training config; default: the config saved in the checkpoint")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from internevo_jax.checkpoint.errors import CheckpointError
    from internevo_jax.checkpoint.internevo_pt.convert import check_target, checkpoint_to_internevo
    from internevo_jax.checkpoint.internevo_pt.writer import TargetLayout
    from internevo_jax.config import ConfigError
    from internevo_jax.writable import ERROR_EXIT, check_writable

    layout = TargetLayout(
        tensor=args.tensor,
        pipeline=args.pipeline,
        weight=args.weight,
        isp=args.isp,
        fsdp=args.fsdp,
        data=args.data,
        zero1=args.zero1,
    )
    try:
        check_target(args.tgt)
        check_writable(args.tgt, fix="Pass a --tgt folder you can write to.", error=CheckpointError)
        written = checkpoint_to_internevo(args.src, args.tgt, layout, args.config)
    except (CheckpointError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    print(f"wrote {len(written)} files to {args.tgt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
