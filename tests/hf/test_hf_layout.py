"""Where every number goes: InternEvo's wqkv grouping through export and import, the name table,
shard planning and size parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hf_helpers import load_state, random_params, tiny_cfg

from internevo_jax.config.units import parse_size
from internevo_jax.hf import export_hf, import_hf
from internevo_jax.hf.shards import plan_shards
from internevo_jax.hf.tensors import tensor_map


def internevo_grouped_rows(heads: int, kv_heads: int, head_dim: int) -> list[tuple[str, int, int]]:
    """InternEvo's wqkv output rows, "(h gs d)" with gs = G + 2: row r -> (kind, head, lane)."""
    groups = heads // kv_heads
    rows = []
    for g in range(kv_heads):
        for s in range(groups + 2):
            for lane in range(head_dim):
                if s < groups:
                    rows.append(("q", g * groups + s, lane))
                elif s == groups:
                    rows.append(("k", g, lane))
                else:
                    rows.append(("v", g, lane))
    return rows


def test_exported_wqkv_rows_follow_internevo_grouping(tmp_path):
    """Numbers, not shapes: label every output column of our fused kernel, export, read the rows."""
    import jax.numpy as jnp

    from internevo_jax.model.block import split_grouped_qkv

    cfg = tiny_cfg("INTERNLM2", kv_heads=2)
    params = random_params(cfg, seed=0)
    heads, kv, d = 6, 2, 8
    # Column c of layer 0's kernel holds the value c in every input row.
    width = kv * (heads // kv + 2) * d
    params["layers_0"]["attention"]["wqkv"]["kernel"] = np.tile(np.arange(width, dtype=np.float32), (48, 1))
    # Which (kind, head, lane) does our model read each column as?
    marker = jnp.arange(width, dtype=jnp.float32).reshape(1, 1, width)
    q, k, v = (np.asarray(t)[0, 0] for t in split_grouped_qkv(marker, heads, kv, d))
    ours = {}
    for kind, arr in (("q", q), ("k", k), ("v", v)):
        for head in range(arr.shape[0]):
            for lane in range(d):
                ours[int(arr[head, lane])] = (kind, head, lane)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    row_values = load_state(str(tmp_path / "hf"))["model.layers.0.attention.wqkv.weight"].numpy()
    assert row_values.shape == (width, 48)
    expected_rows = internevo_grouped_rows(heads, kv, d)
    for r in range(width):
        column = int(row_values[r, 0])
        assert np.all(row_values[r] == column)  # a whole row of the HF weight is one output column here
        assert ours[column] == expected_rows[r], f"HF row {r}"
    back, _ = import_hf(str(tmp_path / "hf"))
    np.testing.assert_array_equal(
        back["layers_0"]["attention"]["wqkv"]["kernel"], params["layers_0"]["attention"]["wqkv"]["kernel"]
    )


@pytest.mark.parametrize(
    "family, path, name, transpose",
    [
        ("INTERNLM", ("embedding", "embedding"), "model.embed_tokens.weight", False),
        ("INTERNLM", ("head", "kernel"), "lm_head.weight", True),
        ("INTERNLM", ("norm", "scale"), "model.norm.weight", False),
        ("INTERNLM", ("layers_3", "attention", "wq", "bias"), "model.layers.3.self_attn.q_proj.bias", False),
        (
            "INTERNLM",
            ("layers_0", "attention", "wo", "kernel"),
            "model.layers.0.self_attn.o_proj.weight",
            True,
        ),
        ("LLAMA2", ("layers_1", "feed_forward", "w1", "kernel"), "model.layers.1.mlp.gate_proj.weight", True),
        ("LLAMA2", ("layers_1", "feed_forward", "w3", "kernel"), "model.layers.1.mlp.up_proj.weight", True),
        ("LLAMA2", ("layers_1", "feed_forward", "w2", "kernel"), "model.layers.1.mlp.down_proj.weight", True),
        ("LLAMA2", ("layers_2", "attention_norm", "scale"), "model.layers.2.input_layernorm.weight", False),
        (
            "LLAMA2",
            ("layers_2", "ffn_norm", "scale"),
            "model.layers.2.post_attention_layernorm.weight",
            False,
        ),
        ("INTERNLM2", ("embedding", "embedding"), "model.tok_embeddings.weight", False),
        ("INTERNLM2", ("head", "kernel"), "output.weight", True),
        (
            "INTERNLM2",
            ("layers_0", "attention", "wqkv", "kernel"),
            "model.layers.0.attention.wqkv.weight",
            True,
        ),
        ("INTERNLM2", ("layers_0", "attention", "wo", "kernel"), "model.layers.0.attention.wo.weight", True),
        (
            "INTERNLM2",
            ("layers_0", "feed_forward", "w2", "kernel"),
            "model.layers.0.feed_forward.w2.weight",
            True,
        ),
        ("INTERNLM2", ("layers_0", "attention_norm", "scale"), "model.layers.0.attention_norm.weight", False),
        ("INTERNLM2", ("layers_0", "ffn_norm", "scale"), "model.layers.0.ffn_norm.weight", False),
    ],
)
def test_name_table(family, path, name, transpose):
    m = tensor_map(family, path)
    assert (m.hf, m.transpose) == (name, transpose)


def test_swiglu_semantics_survive_export(tmp_path):
    """w1 (gate, inside silu) -> gate_proj, w3 (linear) -> up_proj, w2 -> down_proj: not InternEvo's old swap."""
    cfg = tiny_cfg("LLAMA2")
    params = random_params(cfg, seed=7)
    export_hf(params, cfg, str(tmp_path / "hf"), dtype="fp32")
    state = load_state(str(tmp_path / "hf"))
    ff = params["layers_1"]["feed_forward"]
    np.testing.assert_array_equal(state["model.layers.1.mlp.gate_proj.weight"].numpy(), ff["w1"]["kernel"].T)
    np.testing.assert_array_equal(state["model.layers.1.mlp.up_proj.weight"].numpy(), ff["w3"]["kernel"].T)
    np.testing.assert_array_equal(state["model.layers.1.mlp.down_proj.weight"].numpy(), ff["w2"]["kernel"].T)


def test_size_parsing_and_shard_planning():
    assert (
        parse_size("5GB") == 5 * 10**9
        and parse_size("2GiB") == 2 * 2**30
        and parse_size("500mb") == 5 * 10**8
    )
    assert parse_size(1234) == 1234
    with pytest.raises(ValueError, match="5GB"):
        parse_size("five gigs")
    sizes = [("a", 40), ("b", 40), ("c", 100), ("d", 10), ("e", 10)]
    assert plan_shards(sizes, 90) == [["a", "b"], ["c"], ["d", "e"]]  # c is larger than a shard: alone


def test_index_lists_every_tensor_once(tmp_path):
    cfg = tiny_cfg("INTERNLM")
    export_hf(random_params(cfg), cfg, str(tmp_path / "hf"), dtype="fp32", max_shard_size="10KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert len(names) == 3 + 2 * (
        2 + 4 * 2 + 3
    )  # embed/norm/head + per layer: 2 norms, q/k/v/o (+bias), 3 MLP
    assert {n for n in names if n.startswith("model.layers.0.self_attn")} == {
        f"model.layers.0.self_attn.{p}_proj.{w}" for p in "qkvo" for w in ("weight", "bias")
    }
