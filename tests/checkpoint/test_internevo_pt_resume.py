"""Through the CLI and the tools: a run written out in InternEvo's format (tools/jax2internevo.py)
resumes with content=("all",) and trains on with the losses of the run that never stopped, and
jax2internevo -> internevo2jax gives back the same checkpoint, bit for bit."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from ckpt_helpers import CLI_CONFIG, REPO, cli_env, losses, run_cli

from internevo_jax.checkpoint.model_files import read_item


def tool(name: str):
    """A tools/ script as a module (not put on sys.path: tools/ holds names like tokenizer.py)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOTAL, SAVED_AT = 8, 4


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, jax_cache_dir):
    """An uninterrupted run of TOTAL steps that checkpoints at SAVED_AT, and its InternEvo copy."""
    jax2internevo = tool("jax2internevo")

    root = tmp_path_factory.mktemp("internevo_resume")
    config = root / "cfg.py"
    config.write_text(CLI_CONFIG)
    env = cli_env(cache_dir=jax_cache_dir)
    run_dir = root / "reference"
    _ok(run_cli(config, run_dir, [f"data.total_steps={TOTAL}", f"ckpt.checkpoint_every={SAVED_AT}"], env=env))
    ours = run_dir / "checkpoints" / str(SAVED_AT)
    internevo = root / "internevo"
    args = ["--src", str(ours), "--tgt", str(internevo), "--tensor", "2", "--pipeline", "2", "--data", "2"]
    assert jax2internevo.main(args) == 0
    return config, env, losses(run_dir), ours, internevo


@pytest.mark.slow
def test_internevo_folder_resumes_with_the_same_losses(reference_run, tmp_path):
    config, env, reference, _, internevo = reference_run
    held = set(os.listdir(internevo))
    assert {
        "context.pt",
        "sampler.pt",
        "schedulder.pt",
        "model_tp1_pp1.pt",
        "optimizer_tp1_pp1_zo1.pt",
    } <= held
    run_dir = tmp_path / "resumed"
    out = _ok(
        run_cli(
            config,
            run_dir,
            [
                f"data.total_steps={TOTAL}",
                "ckpt.auto_resume=False",
                "ckpt.load_ckpt_info="
                + repr({"path": str(internevo), "content": ("all",), "ckpt_type": "internevo"}),
            ],
            env=env,
        )
    )
    assert "reading the InternEvo checkpoint" in out and "saved with tensor 2, pipeline 2" in out
    got = losses(run_dir)
    assert sorted(got) == list(range(SAVED_AT + 1, TOTAL + 1))  # continues at the saved step
    for step in got:
        assert got[step] == reference[step], f"step {step}: {got[step]} != {reference[step]}"


def test_round_trip_is_bit_identical(reference_run, tmp_path):
    internevo2jax = tool("internevo2jax")

    config, _, _, ours, internevo = reference_run
    assert (
        internevo2jax.main(
            ["--src", str(internevo), "--tgt", str(tmp_path / "back"), "--config", str(config)]
        )
        == 0
    )
    back = tmp_path / "back" / str(SAVED_AT)
    for item in ("model", "optimizer"):
        want = dict(jax.tree_util.tree_leaves_with_path(read_item(str(ours), item)))
        got = dict(jax.tree_util.tree_leaves_with_path(read_item(str(back), item)))
        assert set(got) == set(want)
        for path, value in want.items():
            name = jax.tree_util.keystr(path)
            # Logged values of the last update (its pre-clip norm and hyperparameters) are not state:
            # InternEvo does not keep them and the next update recomputes them.
            if "grad_norm" in name or "['hyperparams']" in name:
                continue
            np.testing.assert_array_equal(got[path], value, err_msg=f"{item}{name}")
    for item in ("context",):
        assert json.loads((back / item / "metadata").read_text()) == json.loads(
            (ours / item / "metadata").read_text()
        )
    assert json.loads((back / "sampler" / "metadata").read_text())["step"] == SAVED_AT


def test_writing_into_a_used_folder_or_impossible_sizes_is_refused(reference_run, tmp_path, capsys):
    jax2internevo = tool("jax2internevo")

    _, _, _, ours, internevo = reference_run
    assert jax2internevo.main(["--src", str(ours), "--tgt", str(internevo)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert jax2internevo.main(["--src", str(ours), "--tgt", str(tmp_path / "x"), "--tensor", "3"]) == 2
    assert "tensor=3 does not divide the 4 attention heads" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_weights_only_conversion_and_the_written_run_state(reference_run, tmp_path):
    internevo2jax = tool("internevo2jax")
    import torch

    from internevo_jax.checkpoint.model_files import load_params

    config, _, _, ours, internevo = reference_run
    out = tmp_path / "weights"
    assert (
        internevo2jax.main(
            ["--src", str(internevo), "--tgt", str(out), "--config", str(config), "--weights_only"]
        )
        == 0
    )
    params, _, _ = load_params(str(out))
    want = read_item(str(ours), "model")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(params)):
        np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))
    # The run state InternEvo's TrainState and StaticBatchSampler load: batch_count is the last
    # batch trained; the sampler's RNG state is RandomState(seed) before the epoch's shuffle.
    context = torch.load(internevo / "context.pt", weights_only=False)
    assert context["batch_count"] == SAVED_AT - 1 and context["step_count"] == SAVED_AT
    sampler = torch.load(internevo / "sampler.pt", weights_only=False)
    ours_sampler = json.loads((ours / "sampler" / "metadata").read_text())
    assert (sampler["seed"], sampler["data_world_size"], sampler["batch_size"]) == (
        ours_sampler["seed"],
        ours_sampler["dp_size"],
        ours_sampler["micro_num"],
    )
    rng = np.random.RandomState(ours_sampler["seed"])
    for _ in range(sampler["epoch"]):
        rng.shuffle(np.arange(ours_sampler["num_packs"]))
    state = rng.get_state()
    assert state[0] == sampler["rng_state"][0] and np.array_equal(state[1], sampler["rng_state"][1])
    assert sampler["num_consumed_samples_in_epoch"] == SAVED_AT * ours_sampler["micro_num"]
