"""Shared pieces of the checkpoint tests: a tiny model config, its train state, a moto S3 server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = dict(
    JOB_NAME="ckpt_test",
    data=dict(seq_len=32, micro_num=2, micro_bsz=1, total_steps=12, train_folder=None, min_length=0),
    model_type="INTERNLM",
    model=dict(
        checkpoint=False,
        num_attention_heads=2,
        vocab_size=128,
        hidden_size=32,
        num_layers=2,
        mlp_ratio=2,
        dtype="torch.float32",
        use_flash_attn=False,
        num_chunks=1,
    ),
    parallel=dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1)),
    adam=dict(lr=1e-2),
    lr_scheduler=dict(total_steps=12, warmup_ratio=0.1),
    ckpt=dict(enable_save_ckpt=True, checkpoint_every=4),
)

# The CLI runs of the end-to-end tests: a step long enough (~0.1-0.3 s on 2 CPU cores) for a test
# to stop the run between two steps, a model small enough to compile in seconds.
CLI_CONFIG = """
JOB_NAME = "ckpt_cli"
data = dict(seq_len=256, micro_num=4, micro_bsz=2, total_steps=12, train_folder=None, min_length=0,
            pack_sample_into_one=False)
model_type = "INTERNLM"
model = dict(checkpoint=False, num_attention_heads=4, vocab_size=512, hidden_size=128, num_layers=2,
             mlp_ratio=2, dtype="torch.float32", use_flash_attn=False, num_chunks=1)
parallel = dict(zero1=dict(size=-1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1))
adam = dict(lr=1e-3)
lr_scheduler = dict(total_steps=12, warmup_ratio=0.1)
ckpt = dict(enable_save_ckpt=True, checkpoint_every=4)
"""


def tiny_config(overrides=(), **sections):
    from internevo_jax.config import config_from_dict

    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in sections.items():
        d[key] = {**d.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(d, "<tiny>", overrides=list(overrides), log=lambda *a: None)


_STATES: dict = {}


def make_state(cfg, devices=None, seed=0, perturb=0.0):
    """(state, shardings, loader) for `cfg` on `devices`; `perturb` shifts every float leaf.

    States are immutable, so they are cached per (model/optimizer settings, devices, seed, perturb):
    building one compiles an initialiser, which costs seconds on CPU. The loader is always new.
    """
    import jax

    from internevo_jax.config import parallel_sizes
    from internevo_jax.data import build_train_loader
    from internevo_jax.parallel import build_mesh, local_dp_ranks

    devices = list(devices or jax.devices()[:1])
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("ckpt", "run_dir")}
    key = (json.dumps(settings, sort_keys=True, default=str), tuple(d.id for d in devices), seed, perturb)
    if key not in _STATES:
        _STATES[key] = _build_state(cfg, devices, seed, perturb)
    state, shardings = _STATES[key]
    sizes = parallel_sizes(cfg, len(devices))
    mesh = build_mesh(sizes, devices)
    loader = build_train_loader(
        cfg, dp_size=sizes.dp, dp_ranks=local_dp_ranks(mesh), vocab_size=cfg.model.vocab_size
    )
    return state, shardings, loader


def _build_state(cfg, devices, seed, perturb):
    import jax
    import numpy as np

    from internevo_jax.config import parallel_sizes
    from internevo_jax.model import build_model
    from internevo_jax.optim import DynamicLossScaler, build_optimizer
    from internevo_jax.parallel import build_mesh, logical_axis_rules
    from internevo_jax.trainer.state import create_train_state

    sizes = parallel_sizes(cfg, len(devices))
    mesh = build_mesh(sizes, devices)
    tx, _, _ = build_optimizer(cfg)
    state, shardings = create_train_state(
        build_model(cfg),
        tx,
        DynamicLossScaler.from_config(cfg),
        mesh,
        logical_axis_rules(cfg),
        jax.random.key(seed),
        cfg.data.seq_len,
    )
    if perturb:
        rng = np.random.default_rng(seed)

        def shift(x):
            if np.issubdtype(x.dtype, np.floating):
                noise = rng.normal(size=x.shape).astype(x.dtype) * perturb
                return jax.device_put(np.asarray(x) + noise, x.sharding)
            return jax.device_put(np.asarray(x) + 3, x.sharding)

        state = jax.tree.map(shift, state)
    return state, shardings


def host_tree(tree):
    import jax
    import numpy as np

    return jax.tree.map(lambda x: np.asarray(x), tree)


def assert_trees_equal(a, b):
    import jax
    import numpy as np

    la, ta = jax.tree.flatten(host_tree(a))
    lb, tb = jax.tree.flatten(host_tree(b))
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server():
    """A real S3-compatible HTTP server (moto) on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-do-not-log",
    "AWS_REGION": "us-east-1",
}


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing-key",
        aws_secret_access_key="testing-secret-do-not-log",
    ).create_bucket(Bucket=bucket)


# -- the CLI ------------------------------------------------------------------------------------
def cli_env(extra=None, cache_dir=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JAX_PLATFORMS"))}
    env.update({"JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"})
    if cache_dir:
        # Later runs load the compiled step from disk: the same executable, seconds instead of ~10 s.
        env.update(
            {
                "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            }
        )
    env.update(extra or {})
    return env


def cli_command(config_path, run_dir, sets=()):
    cmd = [
        sys.executable,
        "-m",
        "internevo_jax.train",
        "--config",
        str(config_path),
        "--launcher",
        "local",
        "--set",
        f"run_dir={run_dir}",
    ]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def start_cli(config_path, run_dir, sets=(), env=None, log_path=None):
    log = open(log_path or os.path.join(str(run_dir) + ".log"), "w")  # noqa: SIM115 - closed by caller via wait
    return subprocess.Popen(
        cli_command(config_path, run_dir, sets), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def run_cli(config_path, run_dir, sets=(), env=None, timeout=240):
    proc = subprocess.run(
        cli_command(config_path, run_dir, sets),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def losses(run_dir) -> dict[int, float]:
    """steps done -> loss from metrics.jsonl (its "step" is the batch index, one less, as InternEvo
    numbers its lines; keyed like the checkpoints); a resumed run appends, so the last line of a
    step wins."""
    out = {}
    path = os.path.join(str(run_dir), "metrics.jsonl")
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by SIGKILL
                    continue
                out[rec["step"] + 1] = rec["loss"]
    return out


def wait_for_step(run_dir, proc, step, timeout=180.0, poll=0.005) -> int:
    """Poll metrics.jsonl until `step` appears (or the process ends); returns the last step seen."""
    deadline = time.time() + timeout
    last = 0
    while time.time() < deadline:
        seen = losses(run_dir)
        last = max(seen) if seen else 0
        if last >= step or proc.poll() is not None:
            return last
        time.sleep(poll)
    return last
