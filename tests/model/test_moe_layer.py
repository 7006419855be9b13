"""The MoE layer against a float64 NumPy token-by-token reference: both routings, top-1/2/8,
shared experts (both mixings), GShard capacities, and the auxiliary losses."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.moe.grouped_matmul import grouped_matmul
from internevo_jax.model.moe.layer import MOE_COLLECTION, MoEFeedForward
from internevo_jax.model.moe.settings import DROPLESS, GSHARD, MoEArgs
from internevo_jax.trainer.moe_loss import moe_loss_and_metrics

H, WIDTH, T, ROWS = 8, 6, 20, 3


def _silu(v):
    return v / (1.0 + np.exp(-v))


def _softmax(v):
    z = np.exp(v - v.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def reference_row(x, p, moe: MoEArgs):
    """One row (routing group) in float64, token by token: (out [T, H], kept [T, k], aux)."""
    tokens, experts, k = x.shape[0], moe.num_experts, moe.top_k
    logits = x @ p["gate"]
    if moe.routing == GSHARD or moe.scoring_func == "softmax":
        scores = _softmax(logits)
    else:
        scores = 1.0 / (1.0 + np.exp(-logits))
    ids = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, ids, -1)
    kept = np.ones((tokens, k), bool)
    if moe.routing == GSHARD:
        capacity = moe.capacity(tokens)
        if capacity is not None:
            used = np.zeros(experts, int)
            for j in range(k):  # every first choice before any second choice, tokens in order
                for t in range(tokens):
                    e = ids[t, j]
                    kept[t, j] = used[e] < capacity
                    used[e] += kept[t, j]
        kept_top = np.where(kept, top, 0.0)
        weights = kept_top / np.maximum(kept_top.sum(-1, keepdims=True), np.finfo(np.float32).eps)
        first = np.eye(experts)[ids[:, 0]]
        aux = experts * (scores.mean(0) * first.mean(0)).sum()
    else:
        weights = top / top.sum(-1, keepdims=True) if moe.normalize_weights else top
        weights = weights * moe.routed_scaling_factor
        counts = np.bincount(ids.reshape(-1), minlength=experts)
        aux = experts / (tokens * k) * (counts * scores.mean(0)).sum()
    out = np.zeros_like(x)
    for t in range(tokens):
        for j in range(k):
            if not kept[t, j]:
                continue
            e = ids[t, j]
            h = _silu(x[t] @ p["w1"][e]) * (x[t] @ p["w3"][e])
            out[t] += weights[t, j] * (h @ p["w2"][e])
    if moe.num_shared_experts:
        s = p["shared_experts"]
        shared = (_silu(x @ s["w1"]["kernel"]) * (x @ s["w3"]["kernel"])) @ s["w2"]["kernel"]
        c = p["coefficient"]
        if moe.shared_mix == "sigmoid":
            out = out + 1.0 / (1.0 + np.exp(-(x @ c["kernel"]))) * shared
        else:
            mix = _softmax(x @ c["kernel"] + c["bias"])
            out = out * mix[:, :1] + shared * mix[:, 1:]
    return out, kept, aux


def _layer(moe: MoEArgs):
    args = ModelArgs(
        vocab_size=16,
        hidden_size=H,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        head_dim=4,
        mlp_hidden_size=WIDTH,
        moe=moe,
        scaled_init=False,
    )
    return MoEFeedForward(args)


def _random_params(layer, seed=0):
    x = jnp.zeros((ROWS, T, H))
    shapes = nn.meta.unbox(jax.eval_shape(lambda: layer.init(jax.random.key(0), x, 0))["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0, 0.5, s.shape).astype(np.float32), shapes)


def _run(moe: MoEArgs, seed=0):
    layer = _layer(moe)
    params = _random_params(layer, seed)
    x = np.random.default_rng(seed + 1).normal(size=(ROWS, T, H)).astype(np.float32)
    out, sown = layer.apply({"params": params}, jnp.asarray(x), 0, mutable=[MOE_COLLECTION])
    routing = sown[MOE_COLLECTION]["routing"][0]
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    refs = [reference_row(x[r].astype(np.float64), p64, moe) for r in range(ROWS)]
    return np.asarray(out), routing, refs


CASES = [
    pytest.param(dict(routing=GSHARD, top_k=1), id="gshard-top1"),
    pytest.param(dict(routing=GSHARD, top_k=2), id="gshard-top2"),
    pytest.param(dict(routing=GSHARD, top_k=8, num_experts=10), id="gshard-top8"),
    pytest.param(dict(routing=DROPLESS, top_k=1), id="dropless-top1"),
    pytest.param(dict(routing=DROPLESS, top_k=2, normalize_weights=False), id="dropless-top2-raw"),
    pytest.param(
        dict(routing=DROPLESS, top_k=8, num_experts=10, routed_scaling_factor=2.5), id="dropless-top8"
    ),
    pytest.param(dict(routing=DROPLESS, top_k=2, scoring_func="sigmoid"), id="dropless-sigmoid"),
    pytest.param(
        dict(routing=GSHARD, top_k=2, num_shared_experts=1, shared_hidden_size=WIDTH, shared_mix="softmax2"),
        id="gshard-residual",
    ),
    pytest.param(
        dict(
            routing=DROPLESS,
            top_k=2,
            num_shared_experts=2,
            shared_hidden_size=2 * WIDTH,
            shared_mix="sigmoid",
        ),
        id="dropless-shared-sigmoid",
    ),
]


@pytest.mark.parametrize("settings", CASES)
def test_moe_layer_matches_float64_token_loop(settings):
    moe = MoEArgs(**{"num_experts": 4, "expert_hidden_size": WIDTH, **settings})
    out, routing, refs = _run(moe)
    for r, (ref_out, ref_kept, ref_aux) in enumerate(refs):
        np.testing.assert_allclose(out[r], ref_out, atol=2e-5, rtol=1e-4)
        np.testing.assert_array_equal(np.asarray(routing.kept[r]), ref_kept)
        np.testing.assert_allclose(float(routing.layer_aux[r]), ref_aux, rtol=1e-5)


def test_gshard_small_capacity_drops_exactly_the_reference_tokens():
    moe = MoEArgs(num_experts=4, top_k=2, expert_hidden_size=WIDTH, capacity_factor=0.5, min_capacity=1)
    assert moe.capacity(T) == 5  # ceil(20 / 4 * 0.5 * 2)
    out, routing, refs = _run(moe, seed=3)
    kept = np.asarray(routing.kept)
    assert 0 < kept.mean() < 1, "this capacity must drop some choices and keep others"
    for r, (ref_out, ref_kept, _) in enumerate(refs):
        np.testing.assert_array_equal(kept[r], ref_kept)
        np.testing.assert_allclose(out[r], ref_out, atol=2e-5, rtol=1e-4)
    # no expert holds more than its capacity in any row
    ids = np.asarray(routing.expert_ids)
    for r in range(ROWS):
        assert np.bincount(ids[r][kept[r]], minlength=4).max() <= 5


def test_dropless_equals_gshard_with_unlimited_capacity():
    gshard = MoEArgs(num_experts=6, top_k=3, expert_hidden_size=WIDTH, drop_tokens=False)
    dropless = MoEArgs(num_experts=6, top_k=3, expert_hidden_size=WIDTH, routing=DROPLESS)
    assert gshard.capacity(T) is None
    out_g, routing_g, _ = _run(gshard, seed=5)
    out_d, routing_d, _ = _run(dropless, seed=5)
    np.testing.assert_allclose(out_g, out_d, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(routing_g.expert_ids), np.asarray(routing_d.expert_ids))


def test_global_aux_loss_is_hf_style_over_all_layers():
    """aux_loss_by_layer=False: one loss over all layers' softmax router scores (padding left out)."""
    moe = MoEArgs(num_experts=4, top_k=2, expert_hidden_size=WIDTH, routing=DROPLESS, aux_loss_by_layer=False)
    layer = _layer(moe)
    rng = np.random.default_rng(7)
    xs = [rng.normal(size=(ROWS, T, H)).astype(np.float32) for _ in range(2)]
    valid = np.ones((ROWS, T), bool)
    valid[:, -6:] = False  # padding at the end of every row
    sown = {}
    all_params = []
    for layer_index, x in enumerate(xs):
        params = _random_params(layer, seed=10 + layer_index)
        all_params.append(params)
        _, state = layer.apply(
            {"params": params}, jnp.asarray(x), 0, jnp.asarray(valid), mutable=[MOE_COLLECTION]
        )
        sown[f"layers_{layer_index}"] = {"feed_forward": state[MOE_COLLECTION]}
    loss, metrics = moe_loss_and_metrics(sown, moe, coeff=0.5)
    per_row = []
    for r in range(ROWS):
        logits = np.concatenate(
            [
                xs[i][r][valid[r]].astype(np.float64) @ np.asarray(all_params[i]["gate"], np.float64)
                for i in range(2)
            ]
        )
        probs = _softmax(logits)
        ids = np.argsort(-probs, axis=-1, kind="stable")[:, :2]
        mask = np.eye(4)[ids]  # [N, k, E]
        per_row.append((mask.mean(0) * probs.mean(0)[None]).sum() * 4)
    np.testing.assert_allclose(float(loss), 0.5 * np.mean(per_row), rtol=1e-5)
    assert np.asarray(metrics["moe_load"]).shape == (2, 4)


def test_by_layer_aux_loss_sums_layers_times_coeff():
    moe = MoEArgs(num_experts=4, top_k=2, expert_hidden_size=WIDTH)
    layer = _layer(moe)
    sown, auxes = {}, []
    for i in range(3):
        params = _random_params(layer, seed=20 + i)
        x = np.random.default_rng(30 + i).normal(size=(ROWS, T, H)).astype(np.float32)
        _, state = layer.apply({"params": params}, jnp.asarray(x), 0, mutable=[MOE_COLLECTION])
        sown[f"layers_{i}"] = {"feed_forward": state[MOE_COLLECTION]}
        p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        auxes.append([reference_row(x[r].astype(np.float64), p64, moe)[2] for r in range(ROWS)])
    loss, metrics = moe_loss_and_metrics(sown, moe, coeff=0.1)
    np.testing.assert_allclose(float(loss), 0.1 * np.sum(auxes, axis=0).mean(), rtol=1e-5)
    load = np.asarray(metrics["moe_load"])
    np.testing.assert_allclose(load.sum(-1), 1.0, rtol=1e-6)  # every choice goes to some expert


@pytest.mark.parametrize("impl", ["tiled", "ragged_dot"])
def test_grouped_matmul_matches_per_group_products(impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 8)).astype(np.float32)
    w = rng.normal(size=(5, 8, 3)).astype(np.float32)
    sizes = np.array([10, 0, 17, 7, 0], np.int32)  # an empty group; rows past the sum stay zero
    starts = np.concatenate([[0], np.cumsum(sizes)])
    want = np.zeros((37, 3))
    for g in range(5):
        want[starts[g] : starts[g + 1]] = x[starts[g] : starts[g + 1]].astype(np.float64) @ w[g]

    def f(x, w):
        return grouped_matmul(x, w, jnp.asarray(sizes), impl=impl, tile=4)

    np.testing.assert_allclose(np.asarray(f(x, w)), want, atol=1e-5)
    # gradients against the per-group products, in float64
    dy = rng.normal(size=(37, 3))
    gx, gw = jax.vjp(f, x, w)[1](jnp.asarray(dy, jnp.float32))
    want_gx, want_gw = np.zeros_like(want, shape=(37, 8)), np.zeros((5, 8, 3))
    for g in range(5):
        rows = slice(starts[g], starts[g + 1])
        want_gx[rows] = dy[rows] @ w[g].T
        want_gw[g] = x[rows].T.astype(np.float64) @ dy[rows]
    np.testing.assert_allclose(np.asarray(gx), want_gx, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gw), want_gw, atol=1e-4)


def test_moe_settings_refuse_impossible_values():
    with pytest.raises(ValueError, match="top_k \\(5\\) must be between 1 and num_experts \\(4\\)"):
        MoEArgs(num_experts=4, top_k=5, expert_hidden_size=WIDTH)
