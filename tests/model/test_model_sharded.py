"""The model under a named mesh with logical-axis rules (8 fake CPU devices, own process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, flax.linen as nn
    from jax.sharding import AxisType, PartitionSpec as P
    from model_helpers import make_cfg, packed_batch
    from internevo_jax.model import build_model

    mesh = jax.make_mesh((1, 2, 2, 2), ("pipeline", "data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 4)
    rules = (
        ("activation_batch", ("data", "fsdp")), ("activation_length", None), ("activation_embed", None),
        ("activation_heads", "tensor"), ("activation_kv", None), ("activation_mlp", "tensor"),
        ("activation_vocab", "tensor"), ("vocab", "tensor"), ("heads", "tensor"), ("kv_heads", "tensor"),
        ("mlp", "tensor"), ("embed", "fsdp"), ("norm", None), ("layers", None),
    )
    ids, pos, seg = packed_batch(np.random.default_rng(0), batch=4)
    for scan in (False, True):
        model = build_model(make_cfg(scan_layers=scan, checkpoint_layers=2, num_kv_attention_heads=2))
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, pos, seg)
            shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
            variables = jax.jit(model.init, out_shardings=shardings)(jax.random.PRNGKey(0), ids, pos, seg)
            logits = jax.jit(model.apply)(variables, ids, pos, seg)
        wq = variables["params"]["layers" if scan else "layers_0"]["attention"]["wq"]["kernel"].value
        assert wq.sharding.spec == (P(None, "fsdp", "tensor") if scan else P("fsdp", "tensor")), wq.sharding.spec
        assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor"), logits.sharding.spec
        expected = jax.jit(model.apply)(jax.device_get(variables), ids, pos, seg)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-5, atol=1e-5)
    print("OK")
    """
)


def test_model_runs_sharded_on_a_mesh():
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240, cwd=root
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
