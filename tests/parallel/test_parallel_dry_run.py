"""`--dry-run`: the 7B config's memory plan on 8 CPU stand-ins, without allocating the model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from internevo_jax.config import ConfigError
from internevo_jax.dry_run import GiB, parse_memory

REPO = Path(__file__).resolve().parents[2]


def dry_run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # the dry run picks its own device count
    cmd = [sys.executable, "-m", "internevo_jax.train", "--dry-run", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def gib(report: str, label: str) -> float:
    return float(re.search(rf"{re.escape(label)}\s+([0-9.]+) GiB", report).group(1))


def test_7b_fits_on_8_devices_of_80gb():
    proc = dry_run("--config", "configs/7b_sft.py", "--devices", "8", "--device-memory", "80GB")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = proc.stdout
    assert (
        "on 8 CPU stand-in devices (mesh pipeline=1 data=1 expert=1 fsdp=8 tensor=1), attention xla" in report
    )
    n_params = 6.7e9 + 2 * 103168 * 4096  # InternLM-7B: 32 layers of 4096 wide plus embedding and head
    assert gib(report, "parameters (fp32 master copy)") == pytest.approx(4 * n_params / 8 / GiB, rel=0.03)
    assert gib(report, "optimizer state (AdamW moments)") == pytest.approx(8 * n_params / 8 / GiB, rel=0.03)
    # ZeRO-1: the fp16 compute copy is whole on every device
    assert gib(report, "weights gathered for compute") == pytest.approx(2 * n_params / GiB, rel=0.03)
    assert ": fits (headroom" in report
    assert "scan_layers=True" in report and "scaled to float16" in report


def test_a_plan_that_does_not_fit_exits_1():
    proc = dry_run(
        "--config", "configs/7b_sft.py", "--devices", "4", "--device-memory", "24GiB",
        "--set", "parallel.tensor.size=2", "--set", "parallel.zero1.size=-1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "(mesh pipeline=1 data=1 expert=1 fsdp=2 tensor=2)" in proc.stdout
    assert "does NOT fit (short by" in proc.stdout


def test_memory_sizes():
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("16GiB") == 16 * 2**30
    assert parse_memory("96e9") == 96 * 10**9
    with pytest.raises(ConfigError, match="not a size like 80GB"):
        parse_memory("lots")


@pytest.fixture(scope="module")
def demo_plans():
    """The demo model (bf16, tensor 2) planned for a v5e 2x2 slice and for 4 CPU stand-ins."""
    pytest.importorskip("libtpu", reason="TPU topology plans need libtpu (the test extra installs it)")
    import jax

    from internevo_jax.config import load_config
    from internevo_jax.dry_run import plan_memory
    from internevo_jax.parallel.topology import topology_devices

    sets = ["parallel.tensor.size=2", "model.use_flash_attn=True", "model.dtype=torch.bfloat16"]
    cfg = load_config(str(REPO / "configs/demo.py"), sets, log=lambda *_: None)
    return plan_memory(cfg, topology_devices("v5e:2x2")), plan_memory(cfg, jax.devices()[:4])


def test_topology_plan_comes_from_the_tpu_compiler(demo_plans):
    tpu, cpu = demo_plans
    assert (tpu.devices, tpu.device_kind, tpu.attention) == (4, "TPU v5 lite", "splash")
    assert (cpu.device_kind, cpu.attention) == ("CPU stand-in", "xla")
    assert tpu.mesh == cpu.mesh == {"pipeline": 1, "data": 1, "expert": 1, "fsdp": 2, "tensor": 2}
    # the parts fixed by the shardings are the same; what the compiler holds is its own
    assert (tpu.params, tpu.optimizer, tpu.gradients, tpu.gathered) == (
        cpu.params, cpu.optimizer, cpu.gradients, cpu.gathered,
    )  # fmt: skip
    assert tpu.device_compiler and not cpu.device_compiler
    assert tpu.temporaries == tpu.compiled_temporaries != cpu.compiled_temporaries
    # the TPU program's temporaries hold at least the fp32 gradient accumulator
    assert tpu.gradients <= tpu.temporaries
    # CPU widens bf16 to fp32 and keeps one layer's [heads, T, T] scores; Splash keeps neither
    assert tpu.temporaries < cpu.compiled_temporaries
    report = tpu.report()
    assert (
        "on 4 TPU v5 lite devices (mesh pipeline=1 data=1 expert=1 fsdp=2 tensor=2), attention splash"
        in report
    )
    assert "compiled by the TPU compiler" in report and "in them: gradients" in report


def test_bad_topology_is_one_paragraph_and_exit_2():
    proc = dry_run("--config", "configs/demo.py", "--topology", "v5e:3x3")
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    message = proc.stderr.strip()
    assert (
        message.startswith("error: --topology='v5e:3x3': the TPU compiler refused it")
        and "e.g. v5e:2x2" in message
    )
    assert "\n" not in message and "Traceback" not in proc.stderr
    proc = dry_run("--config", "configs/demo.py", "--topology", "v5e:2x2", "--devices", "4")
    assert proc.returncode == 2 and "give one" in proc.stderr


def test_a_step_the_tpu_compiler_refuses_for_memory_does_not_fit():
    pytest.importorskip("libtpu", reason="TPU topology plans need libtpu (the test extra installs it)")
    from internevo_jax.config import load_config
    from internevo_jax.dry_run import plan_memory
    from internevo_jax.parallel.topology import topology_devices

    # 7B with ZeRO-1 over 8 and no activation checkpointing on 16 GB v5e chips
    cfg = load_config(str(REPO / "configs/7b_sft.py"), ["model.dtype=torch.bfloat16"], log=lambda *_: None)
    plan = plan_memory(cfg, topology_devices("v5e:2x4"))
    assert plan.fits is False and plan.device_memory == int(15.75 * GiB)  # the compiler's figure
    assert plan.temporaries > 40 * GiB and plan.attention == "splash"
    assert "the TPU compiler refused the step: its temporaries need" in plan.report()


def dense_params(*, vocab, hidden, layers, heads, kv_heads, head_dim, mlp, tied=False) -> int:
    """Parameter count of a LLaMA-style decoder (norm weights and biases are under 0.1%)."""
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    return (1 if tied else 2) * vocab * hidden + layers * (attention + 3 * hidden * mlp)


@pytest.mark.parametrize(
    "config, devices, extra, n_params, layout, gathered_parts",
    [
        (
            "7b_qwen2.py",
            8,
            [],
            dense_params(vocab=152064, hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128, mlp=18944),
            "pipeline=1 data=1 expert=1 fsdp=8 tensor=1",
            1,  # ZeRO-1: the bf16 compute copy is whole on every device
        ),
        (
            # Its own layout (isp, weight parallelism over 16) needs 16 devices; on 8 the weight
            # group is 8, and 8192 tokens per device through 48 layers need activation checkpointing.
            "8b_internlm3.py",
            8,
            ["--set", "parallel.weight.size=8", "--set", "model.checkpoint=True"],
            dense_params(vocab=128512, hidden=4096, layers=48, heads=32, kv_heads=2, head_dim=128, mlp=10240),
            "pipeline=1 data=1 expert=1 fsdp=8 tensor=1",
            8,  # weight parallelism: the compute copy stays split 8 ways
        ),
    ],
    ids=["qwen2-7b", "internlm3-8b"],
)
def test_new_family_plans_at_real_size(config, devices, extra, n_params, layout, gathered_parts):
    proc = dry_run(
        "--config", f"configs/{config}", "--devices", str(devices), "--device-memory", "80GB", *extra
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = proc.stdout
    assert f"(mesh {layout})" in report
    total_fp32 = 4 * n_params / GiB
    sharded = gib(report, "parameters (fp32 master copy)") * devices
    assert sharded == pytest.approx(total_fp32, rel=0.01)
    gathered = gib(report, "weights gathered for compute")
    assert gathered == pytest.approx(2 * n_params / gathered_parts / GiB, rel=0.01)
    assert ": fits (headroom" in report


def test_internlm3_file_layout_on_too_few_devices_is_one_paragraph():
    proc = dry_run("--config", "configs/8b_internlm3.py", "--devices", "8", "--device-memory", "80GB")
    assert proc.returncode != 0
    assert "parallel.weight.size" in proc.stderr and "16 must divide the data-parallel size 8" in proc.stderr


# Mixtral-8x7B (configs/8x7b_mixtral.py): 32 layers of 8 experts (4096 -> 14336 gated MLPs), GQA
# attention (32 heads, 8 kv heads), vocabulary 32000 untied; 46.7B parameters, 45.1B of them experts.
MIXTRAL_EXPERTS = 32 * 8 * 3 * 4096 * 14336
MIXTRAL_DENSE = (
    dense_params(vocab=32000, hidden=4096, layers=32, heads=32, kv_heads=8, head_dim=128, mlp=0)
    + 32 * 4096 * 8
)  # plus the routers


@pytest.fixture(scope="module")
def mixtral_plans():
    """The file's own layout (expert size -1: min(dp, 8) = 8) on 8 and on 64 devices of 80 GB; on 64
    with activation checkpointing (8192 tokens per device through 32 layers)."""
    run = lambda n, *extra: dry_run(  # noqa: E731
        "--config", "configs/8x7b_mixtral.py", "--devices", str(n), "--device-memory", "80GB", *extra
    )
    return {8: run(8), 64: run(64, "--set", "model.checkpoint=True")}


def test_mixtral_8x7b_does_not_fit_on_8_devices_of_80gb(mixtral_plans):
    proc = mixtral_plans[8]
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    report = proc.stdout
    # every device one expert of each layer; the ZeRO group (all 8) spans the expert axis
    assert "(mesh pipeline=1 data=1 expert=8 fsdp=1 tensor=1)" in report
    n_params = MIXTRAL_EXPERTS + MIXTRAL_DENSE
    assert n_params == pytest.approx(46.7e9, rel=0.01)
    params = gib(report, "parameters (fp32 master copy)")
    assert params * 8 == pytest.approx(4 * n_params / GiB, rel=0.01)
    assert gib(report, "optimizer state (AdamW moments)") == pytest.approx(2 * params, rel=0.01)
    # fp32 master, Adam moments and gradients alone are 16 bytes x 46.7B / 8 = 93 GB per device
    states = params * 4
    assert states * GiB > 80e9
    assert "does NOT fit (short by" in report


def test_mixtral_8x7b_fits_on_64_devices_of_80gb(mixtral_plans):
    proc = mixtral_plans[64]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = proc.stdout
    # expert size -1 is min(dp 64, 8 experts); the ZeRO group of 64 is expert 8 x fsdp 8
    assert "(mesh pipeline=1 data=1 expert=8 fsdp=8 tensor=1)" in report
    n_params = MIXTRAL_EXPERTS + MIXTRAL_DENSE
    assert gib(report, "parameters (fp32 master copy)") * 64 == pytest.approx(4 * n_params / GiB, rel=0.01)
    assert gib(report, "total") * GiB < 80e9
    assert ": fits (headroom" in report


def test_mixtral_8x7b_compute_copy_is_zero1(mixtral_plans):
    # ZeRO-1 with experts over 8: each device's own expert of every layer and every dense weight
    # whole, all in bf16
    gathered = gib(mixtral_plans[64].stdout, "weights gathered for compute")
    assert gathered == pytest.approx(2 * (MIXTRAL_EXPERTS / 8 + MIXTRAL_DENSE) / GiB, rel=0.01)
