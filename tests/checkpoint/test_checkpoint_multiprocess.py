"""Two processes on 127.0.0.1 (2 CPU devices each) save one sharded checkpoint to S3; one process resumes it."""

from __future__ import annotations

import subprocess

import boto3
import pytest
from ckpt_helpers import CLI_CONFIG, REPO, S3_ENV, cli_command, cli_env, free_port, losses, make_bucket

# The model of the other CLI tests: the one-process resume below then reuses their compiled step.
SETS = ["ckpt.checkpoint_every=4", "ckpt.save_ckpt_folder=boto3:s3://multi-proc/run"]


def _run_two(config_file, run_dir, sets, env, tmp):
    port = free_port()
    procs = []
    for rank in range(2):
        proc_env = {
            **env,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        }
        cmd = cli_command(config_file, run_dir, sets)
        cmd[cmd.index("local")] = "torch"
        cmd += ["--distributed-timeout", "60"]
        log = open(tmp / f"rank{rank}.log", "w")  # noqa: SIM115 - closed below
        procs.append(
            (subprocess.Popen(cmd, cwd=REPO, env=proc_env, stdout=log, stderr=subprocess.STDOUT), log)
        )
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=300))
        finally:
            log.close()
    text = (tmp / "rank0.log").read_text() + (tmp / "rank1.log").read_text()
    assert codes == [0, 0], text[-4000:]
    return text


@pytest.mark.slow
def test_two_processes_save_shards_to_s3_one_process_resumes(tmp_path, s3_endpoint, jax_cache_dir):
    make_bucket(s3_endpoint, "multi-proc")
    config_file = tmp_path / "cli.py"
    config_file.write_text(CLI_CONFIG)
    env = cli_env({**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}, cache_dir=jax_cache_dir)
    sets = [*SETS, f"ckpt.async_upload_tmp_folder={tmp_path / 'shared_staging'}"]
    run_dir = tmp_path / "run"

    _run_two(config_file, run_dir, [*sets, "data.total_steps=8"], env, tmp_path)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="multi-proc", Prefix="run/8/")["Contents"]]
    assert "run/8/COMMITTED" in keys
    assert any("ocdbt.process_1/" in k for k in keys)  # process 1 uploaded its own shards

    # resume in one process on one device: the shards of both processes reassemble onto the new mesh
    proc = subprocess.run(
        cli_command(config_file, run_dir, [*sets, "data.total_steps=12"]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "resuming from the checkpoint of step 8" in out and "data-parallel size changed from 4 to 1" in out
    assert max(losses(run_dir)) == 12
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="multi-proc", Prefix="run/12/")["Contents"]]
    assert "run/12/COMMITTED" in keys
