"""One process of a multi-process data run: start jax.distributed, build the mesh, feed this process's
data-parallel ranks from the train loader, and save each step's batch as OUT/rank{process}_step{step}.npz.

    python tests/data/multihost_loader_main.py --config CFG --rank R --world_size N --port P --out DIR --steps S

Run by test_data_multihost.py with XLA_FLAGS=--xla_force_host_platform_device_count=<devices per process>.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

import jax  # noqa: E402
import numpy as np  # noqa: E402

from internevo_jax.config import load_config, parallel_sizes  # noqa: E402
from internevo_jax.data import build_train_loader  # noqa: E402
from internevo_jax.parallel import build_mesh, initialize_distributed, local_dp_ranks, resolve_launch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world_size", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    args = p.parse_args(argv)
    info = resolve_launch(
        "local", host="127.0.0.1", port=args.port, rank=args.rank, world_size=args.world_size
    )
    initialize_distributed(info, timeout_s=60)
    cfg = load_config(args.config, log=lambda *_: None)
    sizes = parallel_sizes(cfg, jax.device_count())
    mesh = build_mesh(sizes)
    ranks = local_dp_ranks(mesh)
    loader = build_train_loader(cfg, dp_size=sizes.dp, dp_ranks=ranks)
    out = Path(args.out)
    for step, batch in loader:
        if step >= args.steps:
            break
        np.savez(out / f"rank{jax.process_index()}_step{step}.npz", **batch)
    info_file = out / f"rank{jax.process_index()}.json"
    info_file.write_text(
        json.dumps(
            {
                "process_index": jax.process_index(),
                "process_count": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "dp_size": sizes.dp,
                "dp_ranks": ranks,
            }
        )
    )
    loader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
