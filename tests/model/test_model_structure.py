"""Init statistics, parameter names and logical axes, scan vs unrolled, remat, grad scaling."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from model_helpers import make_cfg, packed_batch, randomize_params

from internevo_jax.config import config_from_dict
from internevo_jax.model import ModelArgs, build_model, round_mlp_hidden_size, stack_layers, unstack_layers

LOGICAL_NAMES = {"vocab", "embed", "heads", "kv_heads", "mlp", "norm", "layers"}


def abstract_init(model, length=8):
    """Shapes and logical boxes of model.init without compiling or running it."""
    ids = jnp.zeros((1, length), jnp.int32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, None, ids)


def init(model, seed=0, length=8):
    ids = jnp.zeros((1, length), jnp.int32)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), ids, None, jnp.ones((1, length), jnp.int32))


def test_mlp_hidden_size_rounds_up_to_multiple_of_256():
    assert round_mlp_hidden_size(4096, 8 / 3) == 11008
    assert round_mlp_hidden_size(2048, 8 / 3) == 5632
    assert round_mlp_hidden_size(64, 8 / 3, multiple_of=32) == 192
    # the real Config: the model reads the width through ModelConfig.mlp_hidden_size
    cfg = config_from_dict(
        {
            "model": dict(
                hidden_size=4096, num_attention_heads=32, mlp_ratio=8 / 3, num_layers=2, vocab_size=128
            )
        },
        log=lambda *_: None,
    )
    assert ModelArgs.from_config(cfg).mlp_hidden_size == 11008


def test_init_statistics_follow_internevo():
    cfg = make_cfg(
        hidden_size=512, num_attention_heads=8, num_kv_attention_heads=8, vocab_size=512, mlp_hidden_size=1024
    )
    params = nn.meta.unbox(init(build_model(cfg))["params"])

    def check_std(x, expected):
        x = np.asarray(x, np.float64)
        assert abs(x.mean()) < 0.02 * expected
        assert x.std() == pytest.approx(expected, rel=0.02)

    assert params["embedding"]["embedding"].dtype == jnp.float32
    check_std(params["embedding"]["embedding"], 0.0052)
    check_std(params["head"]["kernel"], 0.0052)
    for i in range(2):
        layer = params[f"layers_{i}"]
        scaled = 0.006 / np.sqrt(2 * (i + 1))
        for name in ("wq", "wk", "wv"):
            check_std(layer["attention"][name]["kernel"], 0.006)
        check_std(layer["attention"]["wo"]["kernel"], scaled)
        check_std(layer["feed_forward"]["w1"]["kernel"], 0.006)
        check_std(layer["feed_forward"]["w3"]["kernel"], 0.006)
        check_std(layer["feed_forward"]["w2"]["kernel"], scaled)
        for name in ("wq", "wk", "wv", "wo"):
            assert not np.any(layer["attention"][name]["bias"])
        np.testing.assert_array_equal(layer["attention_norm"]["scale"], 1.0)
        np.testing.assert_array_equal(layer["ffn_norm"]["scale"], 1.0)
    np.testing.assert_array_equal(params["norm"]["scale"], 1.0)


def test_unscaled_and_explicit_init_stds():
    base = dict(
        hidden_size=256, num_attention_heads=4, num_kv_attention_heads=4, vocab_size=256, mlp_hidden_size=512
    )
    params = nn.meta.unbox(init(build_model(make_cfg(use_scaled_init=False, **base)))["params"])
    for i in range(2):
        # InternEvo without use_scaled_init: wo and w2 get a flat 0.0015, the rest is unchanged
        assert np.std(params[f"layers_{i}"]["attention"]["wo"]["kernel"]) == pytest.approx(0.0015, rel=0.03)
        assert np.std(params[f"layers_{i}"]["feed_forward"]["w2"]["kernel"]) == pytest.approx(
            0.0015, rel=0.03
        )
        assert np.std(params[f"layers_{i}"]["attention"]["wq"]["kernel"]) == pytest.approx(0.006, rel=0.03)
    cfg = make_cfg(embedding_init_std=0.02, attn_wqkv_init_std=0.01, out_head_init_std=0.03, **base)
    params = nn.meta.unbox(init(build_model(cfg))["params"])
    assert np.std(params["embedding"]["embedding"]) == pytest.approx(0.02, rel=0.03)
    assert np.std(params["head"]["kernel"]) == pytest.approx(0.03, rel=0.03)
    assert np.std(params["layers_1"]["attention"]["wk"]["kernel"]) == pytest.approx(0.01, rel=0.03)


def test_no_bias_drops_attention_biases():
    params = nn.meta.unbox(abstract_init(build_model(make_cfg(no_bias=True)))["params"])
    assert all("bias" not in params["layers_0"]["attention"][n] for n in ("wq", "wk", "wv", "wo"))


def test_scanned_init_uses_per_layer_scaled_std():
    cfg = make_cfg(
        hidden_size=256,
        num_attention_heads=4,
        num_kv_attention_heads=4,
        mlp_hidden_size=512,
        num_layers=3,
        scan_layers=True,
    )
    params = nn.meta.unbox(init(build_model(cfg))["params"])
    wo = np.asarray(params["layers"]["attention"]["wo"]["kernel"])
    assert wo.shape == (3, 256, 256)
    for i in range(3):
        assert wo[i].std() == pytest.approx(0.006 / np.sqrt(2 * (i + 1)), rel=0.03)
    # layers get independent draws
    assert not np.allclose(
        params["layers"]["attention"]["wq"]["kernel"][0], params["layers"]["attention"]["wq"]["kernel"][1]
    )


def test_param_tree_names_and_shapes():
    cfg = make_cfg(num_kv_attention_heads=2)
    shapes = jax.tree.map(jnp.shape, nn.meta.unbox(abstract_init(build_model(cfg))["params"]))
    layer = {
        "attention": {
            "wq": {"kernel": (64, 64), "bias": (64,)},
            "wk": {"kernel": (64, 32), "bias": (32,)},
            "wv": {"kernel": (64, 32), "bias": (32,)},
            "wo": {"kernel": (64, 64), "bias": (64,)},
        },
        "attention_norm": {"scale": (64,)},
        "feed_forward": {"w1": {"kernel": (64, 96)}, "w3": {"kernel": (64, 96)}, "w2": {"kernel": (96, 64)}},
        "ffn_norm": {"scale": (64,)},
    }
    assert shapes == {
        "embedding": {"embedding": (128, 64)},
        "layers_0": layer,
        "layers_1": layer,
        "norm": {"scale": (64,)},
        "head": {"kernel": (64, 128)},
    }


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_every_param_has_logical_axes(scan):
    cfg = make_cfg(scan_layers=scan, norm_type="layernorm")
    variables = abstract_init(build_model(cfg))
    specs = nn.get_partition_spec(variables)["params"]
    values = nn.meta.unbox(variables["params"])
    flat_specs = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    flat_values = jax.tree_util.tree_leaves(values)
    assert len(flat_specs) == len(flat_values) > 0
    for (path, spec), value in zip(flat_specs, flat_values):
        assert isinstance(spec, PartitionSpec), path
        assert len(spec) == value.ndim, (path, spec, value.shape)
        assert set(spec) <= LOGICAL_NAMES, (path, spec)
        if scan and jax.tree_util.keystr(path).startswith("['layers']"):
            assert spec[0] == "layers", (path, spec)
    assert specs["embedding"]["embedding"] == PartitionSpec("vocab", "embed")
    assert specs["head"]["kernel"] == PartitionSpec("embed", "vocab")


def _loss_and_grads(model, variables, ids, positions, segments):
    weights = jax.random.normal(jax.random.PRNGKey(9), (*ids.shape, model.args.vocab_size))

    def loss(params):
        logits = model.apply({"params": params}, ids, positions, segments)
        return jnp.sum(logits.astype(jnp.float32) * weights)

    return jax.jit(jax.value_and_grad(loss))(variables["params"])


_PLAIN_CACHE: dict = {}


def _plain_reference(scan: bool):
    """Random params and the loss/grads of the model without remat (computed once per layout)."""
    if scan not in _PLAIN_CACHE:
        ids, positions, segments = packed_batch(np.random.default_rng(0))
        plain = build_model(make_cfg(scan_layers=scan))
        variables = _random_variables(build_model(make_cfg()), ids, positions, segments)
        if scan:
            variables = stack_layers(variables)
        _PLAIN_CACHE[scan] = (variables, _loss_and_grads(plain, variables, ids, positions, segments))
    return _PLAIN_CACHE[scan]


def _random_variables(model, ids, positions, segments):
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, positions, segments)
    return {"params": randomize_params(nn.meta.unbox(abstract["params"]))}


def test_scan_matches_unrolled_for_same_params():
    ids, positions, segments = packed_batch(np.random.default_rng(0))
    unrolled = build_model(make_cfg())
    scanned = build_model(make_cfg(scan_layers=True))
    variables = _random_variables(unrolled, ids, positions, segments)
    stacked = stack_layers(variables)
    assert stacked["params"]["layers"]["attention"]["wq"]["kernel"].shape == (2, 64, 64)
    out_unrolled = jax.jit(unrolled.apply)(variables, ids, positions, segments)
    out_scanned = jax.jit(scanned.apply)(stacked, ids, positions, segments)
    np.testing.assert_allclose(out_scanned, out_unrolled, rtol=1e-5, atol=1e-5)
    # the round trip restores the unrolled tree exactly
    back = unstack_layers(stacked)
    jax.tree.map(np.testing.assert_array_equal, back, variables)
    # a scanned model's init unstacks to exactly the unrolled model's tree
    as_unrolled = jax.eval_shape(
        lambda: unstack_layers(nn.meta.unbox(scanned.init(jax.random.PRNGKey(3), ids)))
    )
    expected = nn.meta.unbox(jax.eval_shape(unrolled.init, jax.random.PRNGKey(3), ids))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), as_unrolled) == jax.tree.map(
        lambda x: (x.shape, x.dtype), expected
    )


def test_stack_layers_keeps_logical_boxes():
    model = build_model(make_cfg())
    stacked = jax.eval_shape(lambda: stack_layers(init(model)))
    spec = nn.get_partition_spec(stacked)["params"]["layers"]["attention"]["wq"]["kernel"]
    assert spec == PartitionSpec("layers", "embed", "heads")
    back = nn.get_partition_spec(jax.eval_shape(unstack_layers, stacked))["params"]["layers_1"]["attention"][
        "wq"
    ]["kernel"]
    assert back == PartitionSpec("embed", "heads")


@pytest.mark.parametrize(
    "overrides",
    [
        dict(checkpoint_layers=2, remat_policy="full"),
        dict(checkpoint_layers=1, remat_policy="save_matmuls"),
        dict(checkpoint_layers=2, remat_policy="full", scan_layers=True),
    ],
    ids=["full_all", "save_matmuls_first", "scan_full"],
)
def test_remat_keeps_logits_and_grads(overrides):
    ids, positions, segments = packed_batch(np.random.default_rng(0))
    remat = build_model(make_cfg(**overrides))
    assert remat.args.remat_layers == overrides["checkpoint_layers"]
    variables, (loss_plain, grads_plain) = _plain_reference(overrides.get("scan_layers", False))
    loss_remat, grads_remat = _loss_and_grads(remat, variables, ids, positions, segments)
    np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads_remat, grads_plain
    )


def test_remat_policy_none_disables_checkpointing():
    assert build_model(make_cfg(checkpoint_layers=2, remat_policy="none")).args.remat_layers == 0


def test_scan_with_partial_checkpoint_is_rejected():
    with pytest.raises(ValueError, match="scan_layers=True needs checkpoint"):
        build_model(make_cfg(num_layers=4, checkpoint_layers=2, scan_layers=True))


def test_embed_grad_scale_scales_embedding_and_head_grads_only():
    ids, positions, segments = packed_batch(np.random.default_rng(0))
    plain = build_model(make_cfg())
    scaled = build_model(make_cfg(embed_grad_scale=0.1))
    variables, (_, g_plain) = _plain_reference(False)
    np.testing.assert_array_equal(
        jax.jit(scaled.apply)(variables, ids, positions, segments),
        jax.jit(plain.apply)(variables, ids, positions, segments),
    )
    _, g_scaled = _loss_and_grads(scaled, variables, ids, positions, segments)
    for name, sub in (("embedding", "embedding"), ("head", "kernel")):
        np.testing.assert_allclose(g_scaled[name][sub], 0.1 * g_plain[name][sub], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(
        g_scaled["layers_0"]["attention"]["wq"]["kernel"],
        g_plain["layers_0"]["attention"]["wq"]["kernel"],
        rtol=1e-6,
    )


def test_unimplemented_settings_are_refused():
    with pytest.raises(ValueError) as info:
        build_model(make_cfg(drop_rate=0.1, attn_drop_rate=0.2, init_type="uniform"))
    message = str(info.value)
    assert "model.drop_rate=0.1" in message and "model.attn_drop_rate=0.2" in message
    assert "model.init_type='uniform'" in message


def test_ignored_settings_are_reported_as_notes():
    from internevo_jax.model import model_notes

    assert model_notes(make_cfg()) == []
    notes = model_notes(make_cfg(apply_post_layer_norm=True))
    assert len(notes) == 1 and "apply_post_layer_norm" in notes[0]
    assert not build_model(make_cfg(apply_post_layer_norm=True)).args.post_norm


def test_invalid_settings_are_reported():
    with pytest.raises(ValueError, match="multiple of num_kv_attention_heads"):
        build_model(make_cfg(num_kv_attention_heads=3))
    with pytest.raises(ValueError, match="norm_type"):
        build_model(make_cfg(norm_type="batchnorm"))
    with pytest.raises(ValueError, match="remat_policy"):
        build_model(make_cfg(remat_policy="some"))
