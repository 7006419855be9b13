"""build_model on a real Config loaded from configs/7b_sft.py (skipped until both exist)."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.model import InternLM, attention_backend_name, build_model

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "7b_sft.py"


def test_7b_sft_config_builds_the_7b_model():
    from internevo_jax import config

    cfg = config.load_config(str(CONFIG), overrides=["model.num_layers=2"])
    model = build_model(cfg)
    assert isinstance(model, InternLM)
    a = model.args
    assert (a.hidden_size, a.num_heads, a.num_kv_heads, a.head_dim) == (4096, 32, 32, 128)
    assert (a.vocab_size, a.mlp_hidden_size, a.num_layers) == (103168, 11008, 2)
    assert a.qkv_bias and a.out_bias and not a.post_norm and a.norm_type == "rmsnorm"
    assert jnp.dtype(a.dtype) == jnp.float16  # the demo config trains in fp16
    assert attention_backend_name(cfg, "cpu") == "xla"
    ids = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, ids, ids)
    params = nn.meta.unbox(shapes["params"])
    assert params["embedding"]["embedding"].shape == (103168, 4096)
    assert params["layers_1"]["feed_forward"]["w2"]["kernel"].shape == (11008, 4096)
    assert params["head"]["kernel"].dtype == jnp.float32
