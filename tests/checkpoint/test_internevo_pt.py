"""InternEvo's own PyTorch checkpoint folders: written with InternEvo's sharding (tensor, pipeline,
isp weight, FSDP), read onto dp8, tp2 x dp4 and pp2 x dp4 meshes; InternLM1/InternLM2 folders
against a transcription of InternEvo's convert2hf tools; optimizer state, resume and round trip."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # a test dependency: the InternEvo folders are written with torch.save
from ckpt_helpers import make_state, tiny_config

from internevo_jax.checkpoint import build_checkpoint_manager
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.internevo_pt.reader import internevo_tensors, naming_of
from internevo_jax.checkpoint.internevo_pt.writer import OptimizerState, TargetLayout, write_folder
from internevo_jax.hf.tensors import flatten, unflatten, unrolled_leaves
from internevo_jax.model import abstract_params, build_model
from internevo_jax.model.params import stack_layers
from internevo_jax.trainer.startup import load_at_start
from internevo_jax.trainer.state import TrainContext

MODELS = {
    # InternLM1: fused Wqkv (3, heads, head_dim) per tensor rank, biases.
    "INTERNLM": dict(num_attention_heads=4, hidden_size=32, num_layers=4),
    # InternLM2: GQA, wqkv grouped per kv head.
    "INTERNLM2": dict(
        num_attention_heads=8, num_kv_attention_heads=4, hidden_size=32, num_layers=4, no_bias=True
    ),
    # LLaMA2: separate wq / wk / wv.
    "LLAMA2": dict(
        num_attention_heads=8, num_kv_attention_heads=4, hidden_size=32, num_layers=4, no_bias=True
    ),
}
SAVED = {
    "tp1": TargetLayout(data=4),
    "tp2": TargetLayout(tensor=2, data=2),
    "tp4": TargetLayout(tensor=4, data=2),
    "pp2": TargetLayout(pipeline=2, data=2, zero1=2),
    "tp2-pp2": TargetLayout(tensor=2, pipeline=2, data=2),
    "isp-wp2": TargetLayout(isp=True, weight=2, data=4),
    "fsdp-tp2": TargetLayout(fsdp=True, tensor=2, data=4),
}
MESHES = {
    "dp8": dict(zero1=dict(size=8, fsdp=True), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1)),
    "tp2-dp4": dict(zero1=-1, tensor=dict(size=2, mode="mtp"), pipeline=dict(size=1)),
    "pp2-dp4": dict(zero1=-1, tensor=dict(size=1, mode="mtp"), pipeline=dict(size=2)),
}
ONE_DEVICE = dict(zero1=dict(size=1, fsdp=False), tensor=dict(size=1, mode="mtp"), pipeline=dict(size=1))
STEP, BATCHES = 5, 6  # Adam steps (successful updates) and batches trained (one skipped)


def model_cfg(model_type, parallel=MESHES["dp8"], **ckpt):
    return tiny_config(model_type=model_type, model=MODELS[model_type], parallel=parallel, ckpt=ckpt)


def random_tree(cfg, seed, scale=1.0):
    """Unrolled random fp32 params of the config's model (every value distinct; kernels scaled by
    1/sqrt(fan-in) so activations stay O(1), norm weights around 1)."""
    rng = np.random.default_rng(seed)
    shapes = unrolled_leaves(abstract_params(build_model(model_cfg(cfg.model_type))))
    out = {}
    for path, leaf in shapes.items():
        value = rng.standard_normal(leaf.shape)
        if path[-1] == "kernel":
            value /= np.sqrt(leaf.shape[-2])
        elif path[-1] == "scale":
            value = 1 + 0.2 * value
        out[path] = (value * scale).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def sources():
    """Per model type: (model, master params, exp_avg, exp_avg_sq) as unrolled numpy trees."""
    out = {}
    for i, model_type in enumerate(MODELS):
        cfg = model_cfg(model_type)
        master = random_tree(cfg, 10 * i)
        mu = random_tree(cfg, 10 * i + 1, 0.01)
        nu = {k: np.abs(v) for k, v in random_tree(cfg, 10 * i + 2, 1e-4).items()}
        out[model_type] = (build_model(cfg), master, mu, nu)
    return out


def write_source(folder, source, layout, *, dtype=torch.float32, optimizer=True):
    model, master, mu, nu = source
    tensors = {k: internevo_tensors(unflatten(t), model) for k, t in (("m", master), ("mu", mu), ("nu", nu))}
    state = OptimizerState(
        master=tensors["m"],
        exp_avg=tensors["mu"],
        exp_avg_sq=tensors["nu"],
        step=STEP,
        grad_scaler={"_scale": 4096.0, "_growth_step": 7, "_hysteresis_step": 1},
    )
    write_folder(
        str(folder),
        naming_of(model),
        model.args.num_layers,
        tensors["m"],
        layout,
        dtype=dtype,
        optimizer=state if optimizer and not layout.fsdp else None,
        context={
            "batch_count": BATCHES - 1,
            "num_consumed_samples_in_epoch": 12,
            "num_consumed_tokens": 1234,
            "inf_nan_skip_batches": 1,
            "step_count": STEP,
            "tensorboard_folder": None,
        },
        sampler={"seed": 1024, "data_world_size": 4, "batch_count": BATCHES},
        scheduler={"base_lrs": [1e-2], "last_epoch": STEP},
    )
    return str(folder)


def in_layout(unrolled, like):
    """An unrolled tree in the (possibly stacked) layout of `like`."""
    tree = unflatten(unrolled)
    return stack_layers(tree) if "layers" in like else tree


def load(cfg, content, ndev=8):
    state, shardings, loader = make_state(cfg, devices=jax.devices()[:ndev])
    manager = build_checkpoint_manager(cfg, str(cfg.ckpt.save_ckpt_folder) + "_run")
    ctx = TrainContext()
    restored = load_at_start(cfg, manager, state, shardings, ctx, loader)
    manager.finalize()
    return restored, shardings, ctx, loader


def ckpt_settings(folder, content):
    return dict(
        auto_resume=False,
        save_ckpt_folder=f"{folder}_saves",
        load_ckpt_info=dict(path=str(folder), content=content, ckpt_type="internevo"),
    )


def assert_tree_equal(actual, expected_unrolled):
    expected = in_layout(expected_unrolled, actual)
    got = flatten(jax.tree.map(np.asarray, actual))
    want = flatten(expected)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=".".join(key))


@pytest.fixture(scope="module")
def eight_devices():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")


@pytest.mark.parametrize("mesh", sorted(MESHES))
@pytest.mark.parametrize("saved", sorted(SAVED))
@pytest.mark.parametrize("model_type", ["INTERNLM2"])
def test_weights_load_onto_any_mesh(tmp_path, eight_devices, sources, model_type, saved, mesh):
    folder = write_source(tmp_path / "internevo", sources[model_type], SAVED[saved])
    cfg = model_cfg(model_type, MESHES[mesh], **ckpt_settings(folder, ("model",)))
    state, shardings, ctx, _ = load(cfg, ("model",))
    assert ctx.step == 0  # content=("model",): fine-tuning starts at step 0, as in InternEvo
    for leaf, sharding in zip(jax.tree.leaves(state.params), jax.tree.leaves(shardings.params)):
        assert leaf.sharding == sharding
    if mesh == "tp2-dp4":  # really tensor-parallel: some weight split over 2 tensor shards
        assert any("tensor" in str(getattr(s, "spec", "")) for s in jax.tree.leaves(shardings.params))
    assert_tree_equal(state.params, sources[model_type][1])


@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("saved", ["tp2-pp2", "tp4", "isp-wp2"])
def test_every_family_gives_the_source_logits(tmp_path, eight_devices, sources, model_type, saved):
    """fp32 shards load onto tensor 2 x data 4 and compute the source model's logits (the
    reference: the source params on one device; the sharded matmuls sum in another order)."""
    model, master, _, _ = sources[model_type]
    folder = write_source(tmp_path / "internevo", sources[model_type], SAVED[saved])
    cfg = model_cfg(model_type, MESHES["tp2-dp4"], **ckpt_settings(folder, ("model",)))
    state, _, _, _ = load(cfg, ("model",))
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 128, (2, 16)), jnp.int32)
    ours = np.asarray(jax.jit(model.apply)({"params": state.params}, tokens))
    reference = np.asarray(jax.jit(model.apply)({"params": unflatten(master)}, tokens))
    assert np.abs(ours - reference).max() < 1e-5  # logits of size ~1: float32 rounding


@pytest.mark.parametrize("mesh", ["tp2-dp4", "pp2-dp4"])
@pytest.mark.parametrize("saved", ["tp1", "tp2-pp2", "isp-wp2"])
def test_all_restores_master_weights_moments_and_counters(tmp_path, eight_devices, sources, saved, mesh):
    model_type = "INTERNLM2"
    _, master, mu, nu = sources[model_type]
    # bf16 model shards: the params must come from the fp32 master copies in the optimizer files.
    folder = write_source(tmp_path / "internevo", sources[model_type], SAVED[saved], dtype=torch.bfloat16)
    cfg = model_cfg(model_type, MESHES[mesh], **ckpt_settings(folder, ("all",)))
    state, _, ctx, loader = load(cfg, ("all",))
    assert_tree_equal(state.params, master)
    adam = state.opt_state[1].inner_state[0]
    assert_tree_equal(adam.mu, mu)
    assert_tree_equal(adam.nu, nu)
    counts = [
        np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(state.opt_state) if "count" in str(p)
    ]
    assert counts and all(int(c) == STEP for c in counts)
    assert float(state.loss_scale.scale) == 4096.0
    assert int(state.loss_scale.growth_step) == 7 and int(state.loss_scale.hysteresis_step) == 1
    assert (ctx.step, ctx.num_consumed_tokens, ctx.inf_nan_skip_batches) == (BATCHES, 1234, 1)
    assert loader.state()["step"] == BATCHES


# -- InternEvo's own conversion --------------------------------------------------------------------
def convert2hf_internlm(folder, layers, heads, hidden):
    """InternEvo's transformers/convert2hf_internlm.py, transcribed: merge pipeline stages by
    shifting layer numbers, then cat tensor shards (Wqkv per rank as (3, heads/tp, head_dim, hidden);
    its historical naming: w2 is up_proj, w3 is down_proj; embedding split on hidden)."""
    states = _merged_states(folder)
    tp, out = len(states), {}
    for i in range(layers):
        wqkv = [s[f"blocks.{i}.mixer.Wqkv.weight"].reshape(3, heads // tp, -1, hidden) for s in states]
        bqkv = [s[f"blocks.{i}.mixer.Wqkv.bias"].reshape(3, heads // tp, -1) for s in states]
        pre = f"model.layers.{i}."
        for j, name in enumerate("qkv"):
            out[pre + f"self_attn.{name}_proj.weight"] = torch.cat([w[j] for w in wqkv], 0).reshape(
                hidden, hidden
            )
            out[pre + f"self_attn.{name}_proj.bias"] = torch.cat([b[j] for b in bqkv], 0).reshape(-1)
        out[pre + "self_attn.o_proj.weight"] = torch.cat(
            [s[f"blocks.{i}.mixer.out_proj.weight"] for s in states], 1
        )
        out[pre + "self_attn.o_proj.bias"] = states[0][f"blocks.{i}.mixer.out_proj.bias"]
        out[pre + "mlp.gate_proj.weight"] = torch.cat([s[f"blocks.{i}.mlp.w1.weight"] for s in states], 0)
        out[pre + "mlp.down_proj.weight"] = torch.cat([s[f"blocks.{i}.mlp.w3.weight"] for s in states], 1)
        out[pre + "mlp.up_proj.weight"] = torch.cat([s[f"blocks.{i}.mlp.w2.weight"] for s in states], 0)
        out[pre + "input_layernorm.weight"] = states[0][f"blocks.{i}.norm1.weight"]
        out[pre + "post_attention_layernorm.weight"] = states[0][f"blocks.{i}.norm2.weight"]
    out["model.norm.weight"] = states[0]["norm.weight"]
    out["model.embed_tokens.weight"] = torch.cat([s["embedding.weight"] for s in states], 1)
    out["lm_head.weight"] = torch.cat([s["head.weight"] for s in states], 0)
    return out


def convert2hf_internlm2(folder, layers):
    """InternEvo's transformers/convert2hf_internlm2.py (adapt_hf=True), transcribed."""
    states = _merged_states(folder)
    out = {}
    for i in range(layers):
        pre, src = f"model.layers.{i}.", f"layers.{i}."
        out[pre + "attention.wqkv.weight"] = torch.cat([s[src + "attention.wqkv.weight"] for s in states], 0)
        out[pre + "attention.wo.weight"] = torch.cat([s[src + "attention.wo.weight"] for s in states], 1)
        for name, dim in (("w1", 0), ("w2", 1), ("w3", 0)):
            key = f"feed_forward.{name}.weight"
            out[pre + key] = torch.cat([s[src + key] for s in states], dim)
        out[pre + "attention_norm.weight"] = states[0][src + "attention_norm.weight"]
        out[pre + "ffn_norm.weight"] = states[0][src + "ffn_norm.weight"]
    out["model.norm.weight"] = states[0]["norm.weight"]
    out["model.tok_embeddings.weight"] = torch.cat([s["tok_embeddings.weight"] for s in states], 1)
    out["output.weight"] = torch.cat([s["output.weight"] for s in states], 0)
    return out


def _merged_states(folder):
    names = [n for n in os.listdir(folder) if re.match(r"model_tp\d+_pp\d+\.pt$", n)]
    tp = 1 + max(int(re.search(r"tp(\d+)", n).group(1)) for n in names)
    pp = 1 + max(int(re.search(r"pp(\d+)", n).group(1)) for n in names)
    merged = []
    for t in range(tp):
        shift, out = 0, {}
        for p in range(pp):
            stage = torch.load(os.path.join(folder, f"model_tp{t}_pp{p}.pt"), map_location="cpu")
            top = 0
            for key, value in stage.items():
                m = re.search(r"\.\d+\.", key)
                if m:
                    idx = int(key[m.start() + 1 : m.end() - 1])
                    top = max(top, idx)
                    key = f"{key[: m.start()]}.{idx + shift}.{key[m.end() :]}"
                out[key] = value
            shift += top + 1
        merged.append(out)
    return merged


def _older_mlp_names(folder):
    """Rename the MLP as older InternLM1 checkpoints hold it: w2 = up, w3 = down."""
    for name in os.listdir(folder):
        if name.startswith("model_t"):
            path = os.path.join(folder, name)
            state = torch.load(path)
            swap = {".mlp.w2.": ".mlp.w3.", ".mlp.w3.": ".mlp.w2."}
            renamed = {}
            for key, value in state.items():
                for a, b in swap.items():
                    if a in key:
                        key = key.replace(a, b)
                        break
                renamed[key] = value
            torch.save(renamed, path)


@pytest.mark.parametrize("model_type", ["INTERNLM", "INTERNLM2"])
def test_internevo_convert2hf_gives_the_same_model(tmp_path, sources, model_type, caplog):
    from safetensors.torch import save_file

    from internevo_jax.hf import export_hf, load_hf_params

    model, master, _, _ = sources[model_type]
    folder = write_source(tmp_path / "internevo", sources[model_type], SAVED["tp2-pp2"], optimizer=False)
    args = model.args
    if model_type == "INTERNLM":
        _older_mlp_names(folder)  # what convert2hf_internlm.py reads
        hf = convert2hf_internlm(folder, args.num_layers, args.num_heads, args.hidden_size)
    else:
        hf = convert2hf_internlm2(folder, args.num_layers)
    cfg = model_cfg(model_type, ONE_DEVICE, **ckpt_settings(folder, ("model",)))
    export_hf(unflatten(master), cfg, str(tmp_path / "hf"), dtype="fp32")  # config.json and file names
    for name in os.listdir(tmp_path / "hf"):
        if name.endswith(".safetensors"):
            os.remove(tmp_path / "hf" / name)
    (tmp_path / "hf" / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file({k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "hf" / "model.safetensors"))
    via_hf = load_hf_params(str(tmp_path / "hf"), cfg, abstract_params(model))

    caplog.set_level("INFO", logger="internevo_jax")
    state, _, _, _ = load(cfg, ("model",), ndev=1)
    direct = jax.tree.map(np.asarray, state.params)
    if model_type == "INTERNLM":
        assert "older (w2 = up, w3 = down" in caplog.text
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, 128, (2, 16)), jnp.int32)
    a = np.asarray(jax.jit(model.apply)({"params": via_hf}, tokens))
    b = np.asarray(jax.jit(model.apply)({"params": direct}, tokens))
    assert np.abs(a - b).max() < 1e-6
    assert_tree_equal(direct, flatten(jax.tree.map(np.asarray, via_hf)))


# -- bad input -------------------------------------------------------------------------------------
@pytest.fixture
def good_folder(tmp_path, sources):
    return write_source(tmp_path / "internevo", sources["INTERNLM2"], SAVED["tp2-pp2"])


def read_model(folder):
    from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder

    model = build_model(model_cfg("INTERNLM2"))
    f = InternEvoFolder(folder, model)
    for path in unrolled_leaves(abstract_params(model)):
        f.leaf(path)
    return f


def test_truncated_shard_is_named(good_folder):
    path = os.path.join(good_folder, "model_tp1_pp1.pt")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CheckpointError, match=r"model_tp1_pp1\.pt .*truncated or is not a torch.save file"):
        read_model(good_folder)


def test_missing_shard_is_named(good_folder):
    os.remove(os.path.join(good_folder, "model_tp1_pp0.pt"))
    with pytest.raises(CheckpointError, match=r"lacks 1 model shard.*model_tp1_pp0\.pt.*incomplete"):
        read_model(good_folder)


def test_shards_of_two_runs_are_refused(tmp_path, good_folder, sources):
    other = write_source(
        tmp_path / "other",
        (sources["INTERNLM2"][0], *[{k: v + 1 for k, v in t.items()} for t in sources["INTERNLM2"][1:]]),
        SAVED["tp2-pp2"],
    )
    os.replace(os.path.join(other, "model_tp1_pp0.pt"), os.path.join(good_folder, "model_tp1_pp0.pt"))
    with pytest.raises(
        CheckpointError, match=r"differ.*model_tp0_pp0\.pt.*model_tp1_pp0\.pt.*different runs"
    ):
        read_model(good_folder)


def test_tensor_size_that_does_not_divide_the_heads(tmp_path, sources):
    model = sources["INTERNLM2"][0]
    folder = tmp_path / "tp3"
    folder.mkdir()
    for t in range(3):  # three tensor ranks for 4 heads and 4 kv heads: not a layout InternEvo can save
        torch.save({"tok_embeddings.weight": torch.zeros(128, 11)}, folder / f"model_tp{t}_pp0.pt")
    from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder

    with pytest.raises(CheckpointError, match=r"tensor-parallel size 3.*does not divide.*8 attention heads"):
        InternEvoFolder(str(folder), model)


def test_folder_of_another_model_names_both_sides(tmp_path, sources):
    folder = write_source(tmp_path / "llama", sources["LLAMA2"], SAVED["tp2"])
    cfg = model_cfg("INTERNLM2", MESHES["dp8"], **ckpt_settings(folder, ("model",)))
    with pytest.raises(
        CheckpointError,
        match=r"holds 'layers\.0\.attention\.w[kqv]\.weight'.*a .*LLAMA2.* model \(4 layers, hidden_size 32\).*INTERNLM2",
    ):
        load(cfg, ("model",))
    lm2 = write_source(tmp_path / "lm2", sources["INTERNLM2"], SAVED["tp2"])
    fewer = tiny_config(
        model_type="INTERNLM2",
        model=dict(MODELS["INTERNLM2"], num_layers=2),
        parallel=MESHES["dp8"],
        ckpt=ckpt_settings(lm2, ("model",)),
    )
    with pytest.raises(CheckpointError, match=r"holds 4 layers, but the config's model has 2"):
        load(fewer, ("model",))


# -- the rest of the model zoo ---------------------------------------------------------------------
ZOO = {
    "QWEN2": dict(qkv_bias=True),
    "QWEN3": dict(qk_norm=True, head_dim=8),
    "INTERNLM3": dict(no_bias=True),
    "GEMMA": dict(tie_word_embeddings=False, head_dim=8),
    "BAICHUAN2": dict(num_kv_attention_heads=4),
    "MIXTRALMOE": dict(num_experts=4, top_k=2),
    "QWEN2MOE": dict(num_experts=4, top_k=2, num_shared_experts=1),
    "QWEN3MOE": dict(num_experts=4, top_k=2),
    "INTERNLM_MoE": dict(num_experts=4, top_k=2, num_kv_attention_heads=4),
}


def random_leaves(model, seed):
    rng = np.random.default_rng(seed)
    shapes = unrolled_leaves(abstract_params(model))
    return {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in shapes.items()}


def zoo_model(model_type):
    sizes = dict(num_attention_heads=4, num_kv_attention_heads=2, hidden_size=32, num_layers=4)
    return build_model(tiny_config(model_type=model_type, model={**sizes, **ZOO[model_type]}))


@pytest.mark.parametrize("model_type", sorted(ZOO))
def test_zoo_families_read_back(tmp_path, model_type):
    """Every registered family, its tensors cut over tensor 2 x pipeline 2 (routed experts in
    their own per-expert files), reads back exactly."""
    from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder

    model = zoo_model(model_type)
    flat = random_leaves(model, 5)
    write_folder(
        str(tmp_path),
        naming_of(model),
        4,
        internevo_tensors(unflatten(flat), model),
        SAVED["tp2-pp2"],
        dtype=torch.float32,
    )
    if model.args.moe is not None:
        assert os.path.exists(tmp_path / "model_moe_layer3_expert3_tp1.pt")
    folder = InternEvoFolder(str(tmp_path), model)
    for path, value in flat.items():
        np.testing.assert_array_equal(folder.leaf(path), value, err_msg=".".join(path))


def test_grouped_experts_read_like_listed_ones(tmp_path):
    """InternEvo's default GroupedFeedForward files (one per expert-parallel rank, [experts / ep,
    in, out]) give the same experts as the per-expert files they were built from."""
    from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder

    model = zoo_model("MIXTRALMOE")
    flat = random_leaves(model, 6)
    tensors = internevo_tensors(unflatten(flat), model)
    write_folder(str(tmp_path), naming_of(model), 4, tensors, TargetLayout(pipeline=2), dtype=torch.float32)
    ep = 2
    for layer in range(4):
        listed = [torch.load(tmp_path / f"model_moe_layer{layer}_expert{e}_tp0.pt") for e in range(4)]
        for e in range(4):
            os.remove(tmp_path / f"model_moe_layer{layer}_expert{e}_tp0.pt")
        for r in range(ep):  # the rank's experts stacked as GroupedFeedForward holds them
            grouped = {}
            for key in listed[0]:
                mine = [listed[e][key.replace(".0.w", f".{e}.w")] for e in range(r * 2, r * 2 + 2)]
                grouped[key.replace(".wrapped_experts.0.", f".wrapped_experts.{r}.")] = torch.stack(
                    [w.T for w in mine]
                )
            torch.save(grouped, tmp_path / f"model_moe_layer{layer}_expert{r}_tp0.pt")
    folder = InternEvoFolder(str(tmp_path), model)
    for path, value in flat.items():
        np.testing.assert_array_equal(folder.leaf(path), value, err_msg=".".join(path))


def test_tied_head_against_internevo_head_says_what_to_set(tmp_path):
    from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder

    untied = zoo_model("GEMMA")
    flat = random_leaves(untied, 7)
    write_folder(
        str(tmp_path),
        naming_of(untied),
        4,
        internevo_tensors(unflatten(flat), untied),
        TargetLayout(),
        dtype=torch.float32,
    )
    tied = build_model(
        tiny_config(
            model_type="GEMMA",
            model=dict(
                num_attention_heads=4, num_kv_attention_heads=2, hidden_size=32, num_layers=4, head_dim=8
            ),
        )
    )
    with pytest.raises(CheckpointError, match=r"holds 'output\.weight'.*tie_word_embeddings=False"):
        InternEvoFolder(str(tmp_path), tied)


def test_recorded_optimizer_split_is_followed(tmp_path, sources, monkeypatch):
    """With overlap_sync_param InternEvo hands parameters to zero ranks its own way and records the
    split (gpus-*_zo-*.pt beside the optimizer files): the reader follows the record; without it
    the recomputed split does not fit and the error says so."""
    from internevo_jax.checkpoint.internevo_pt import writer
    from internevo_jax.checkpoint.internevo_pt.reader import InternEvoFolder

    def round_robin(params, ranks):
        return [params[r::ranks] for r in range(ranks)]

    monkeypatch.setattr(writer, "partition", round_robin)
    folder = write_source(tmp_path / "internevo", sources["INTERNLM2"], TargetLayout(tensor=2, data=4))
    monkeypatch.undo()
    plans = [n for n in os.listdir(folder) if n.startswith("gpus-")]
    assert sorted(plans)[0] == "gpus-8_wp-0_tp-0_dp-0_pp-0_zo-0.pt" and len(plans) == 8
    model, master, mu, _ = sources["INTERNLM2"]
    read = InternEvoFolder(folder, model)
    optimizer = read.optimizer()
    for path in master:
        np.testing.assert_array_equal(read.leaf(path, optimizer.field("master")), master[path])
        np.testing.assert_array_equal(read.leaf(path, optimizer.field("exp_avg")), mu[path])
    for name in plans:
        os.remove(os.path.join(folder, name))
    read = InternEvoFolder(folder, model)
    with pytest.raises(CheckpointError, match=r"do not belong to these model shards"):
        for path in master:
            read.leaf(path, read.optimizer().field("master"))
