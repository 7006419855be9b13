"""InternEvo's `_base_` configs (configs/demo.py importing configs/_base_/...) load unchanged."""

import math
import sys
import textwrap

import jax
import pytest

from internevo_jax.config import ConfigError, load_config
from internevo_jax.config.loader import _split

DEMO = """\
    # Copyright (c) InternLM. All rights reserved.
    from internlm.utils.utils import read_base

    with read_base():
        from configs._base_.default_runtime import *  # pylint: disable=W0401,W0614  # noqa: F401
        from configs._base_.models.internlm2_7B import *  # pylint: disable=W0401,W0614  # noqa: F401

    JOB_NAME = "7b_train"
    SEQ_LEN = 2048

    ckpt = dict(enable_save_ckpt=False, auto_resume=False, checkpoint_every=50)
    data = dict(seq_len=SEQ_LEN, micro_num=4, micro_bsz=2, total_steps=50000, train_folder=None)
    model_type = "INTERNLM2_PUBLIC"
"""

RUNTIME = """\
    # Copyright (c) InternLM. All rights reserved.
    cudnn_deterministic = False
    enable_tb = True
    data = dict(seq_len=4096, micro_num=1, micro_bsz=1, total_steps=100)
    ckpt = dict(enable_save_ckpt=True, checkpoint_every=1000)
    adam = dict(lr=3e-4, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, weight_decay=0.01)
    grad_scaler = dict(fp16=dict(initial_scale=2**14, min_scale=1, growth_interval=1000), growth_factor=2)
"""

MODEL = """\
    # Copyright (c) InternLM. All rights reserved.
    model_type = "INTERNLM2"

    VOCAB_SIZE = {vocab}
    HIDDEN_SIZE = 4096
    NUM_ATTENTION_HEAD = 32
    NUM_KV_ATTENTION_HEAD = 8
    MLP_RATIO = 3.5
    NUM_LAYER = 32

    model = dict(
        checkpoint=0.2,
        dtype="torch.bfloat16",
        num_layers=NUM_LAYER,
        hidden_size=HIDDEN_SIZE,
        vocab_size=VOCAB_SIZE,
        num_attention_heads=NUM_ATTENTION_HEAD,
        num_kv_attention_heads=NUM_KV_ATTENTION_HEAD,
        mlp_ratio=MLP_RATIO,
        no_bias=True,
        rope_base=1000000,
    )
    hybrid_zero_optimizer = dict(overlap_sync_grad=True, clip_grad_norm=1.0)
    parallel = dict(zero1=dict(size=8, fsdp=False), tensor=1, pipeline=dict(size=1), sequence_parallel=False)
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_tree(root, demo=DEMO, vocab=92544):
    """InternEvo's layout: configs/demo.py, configs/_base_/default_runtime.py, configs/_base_/models/."""
    write(root / "configs" / "demo.py", demo)
    write(root / "configs" / "_base_" / "default_runtime.py", RUNTIME)
    write(root / "configs" / "_base_" / "models" / "internlm2_7B.py", MODEL.format(vocab=vocab))
    return root / "configs" / "demo.py"


def quiet(path, **kw):
    return load_config(path, log=lambda _: None, **kw)


def assert_demo_values(cfg, vocab=92544):
    # from the model base, untouched by demo.py
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.vocab_size) == (32, 4096, vocab)
    assert (m.num_attention_heads, m.num_kv_attention_heads) == (32, 8)
    assert m.mlp_ratio == 3.5 and m.rope_base == 1000000 and m.dtype == "torch.bfloat16"
    assert cfg.hybrid_zero_optimizer.clip_grad_norm == 1.0
    assert cfg.parallel.zero1.size == 8
    # from the runtime base
    assert cfg.adam.lr == 3e-4
    assert cfg.grad_scaler.fp16.initial_scale == 2**14
    # demo.py's own assignments win over both bases
    assert cfg.model_type == "INTERNLM2_PUBLIC"
    assert (cfg.data.seq_len, cfg.data.micro_num, cfg.data.total_steps) == (2048, 4, 50000)
    assert cfg.ckpt.enable_save_ckpt is False and cfg.ckpt.checkpoint_every == 50
    assert cfg.job_name == "7b_train"
    # the bases' UPPER_CASE names are variables, as if written in demo.py
    assert cfg.variables["NUM_LAYER"] == 32 and cfg.variables["SEQ_LEN"] == 2048


def assert_nothing_left(root):
    assert not any(name == "internlm" or name.startswith("internlm.") for name in sys.modules)
    assert not any(name == "configs" or name.startswith("configs.") for name in sys.modules)
    assert str(root / "configs") not in sys.path


def test_absolute_path(tmp_path):
    cfg = quiet(make_tree(tmp_path))
    assert_demo_values(cfg)
    assert_nothing_left(tmp_path)


def test_relative_path_from_the_tree_root(tmp_path, monkeypatch):
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert_demo_values(quiet("configs/demo.py"))
    assert_nothing_left(tmp_path)


def test_the_import_root_may_be_a_subfolder_of_the_current_directory(tmp_path, monkeypatch):
    # demo.py one level away from `configs`: found in the current directory, InternEvo's way
    make_tree(tmp_path)
    write(tmp_path / "experiments" / "run.py", DEMO)
    monkeypatch.chdir(tmp_path)
    assert_demo_values(quiet(tmp_path / "experiments" / "run.py"))
    assert_nothing_left(tmp_path)


def test_two_trees_in_one_process_each_get_their_own_bases(tmp_path):
    first = quiet(make_tree(tmp_path / "a", vocab=1000))
    second = quiet(make_tree(tmp_path / "b", vocab=2000))
    assert first.model.vocab_size == 1000 and second.model.vocab_size == 2000
    assert quiet(tmp_path / "a" / "configs" / "demo.py").model.vocab_size == 1000


def test_a_base_may_import_another_base(tmp_path):
    make_tree(tmp_path)
    write(
        tmp_path / "configs" / "_base_" / "models" / "small.py",
        """\
        from configs._base_.models.internlm2_7B import *

        NUM_LAYER = 4
        model = dict(model, num_layers=NUM_LAYER)
        """,
    )
    demo = DEMO.replace("models.internlm2_7B", "models.small")
    cfg = quiet(make_tree(tmp_path, demo=demo))
    assert cfg.model.num_layers == 4 and cfg.model.hidden_size == 4096
    assert cfg.variables["NUM_LAYER"] == 4


def test_a_missing_base_names_the_file_the_import_and_the_folders(tmp_path):
    demo = DEMO.replace("models.internlm2_7B", "models.internlm2_missing")
    path = make_tree(tmp_path, demo=demo)
    with pytest.raises(ConfigError) as err:
        quiet(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert "from configs._base_.models.internlm2_missing import *" in msg
    assert str(tmp_path / "configs" / "_base_" / "models" / "internlm2_missing") + ".py" in msg
    assert_nothing_left(tmp_path)


def test_an_unknown_import_root_lists_where_it_was_looked_for(tmp_path):
    path = make_tree(tmp_path, demo=DEMO.replace("from configs._base_.default", "from cfgs._base_.default"))
    with pytest.raises(ConfigError) as err:
        quiet(path)
    msg = str(err.value)
    assert "`from cfgs._base_.default_runtime import *`" in msg and "there is no module 'cfgs'" in msg
    assert f"as {tmp_path / 'configs'} or a parent folder" in msg
    assert_nothing_left(tmp_path)


def test_read_base_and_modules_are_not_config_keys(tmp_path):
    from internevo_jax.config.base_configs import read_base

    variables, schema = _split({"read_base": read_base, "sys": sys, "model_type": "X", "SEQ_LEN": 8})
    assert schema == {"model_type": "X"} and variables == {"SEQ_LEN": 8}


def test_a_real_internlm_is_used_when_it_imports(tmp_path, monkeypatch):
    real = tmp_path / "site" / "internlm"
    write(real / "__init__.py", "REAL = True\n")
    write(real / "utils" / "__init__.py", "")
    write(real / "utils" / "utils.py", "from contextlib import nullcontext as read_base\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        assert_demo_values(quiet(make_tree(tmp_path / "tree")))
        assert getattr(sys.modules["internlm"], "REAL", False)
    finally:
        for name in [n for n in sys.modules if n.partition(".")[0] == "internlm"]:
            del sys.modules[name]


def test_a_real_internlm_that_does_not_import_falls_back_to_the_stand_in(tmp_path, monkeypatch):
    # an InternEvo checkout on sys.path without its dependencies
    real = tmp_path / "site" / "internlm"
    write(real / "__init__.py", "import torch_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert_demo_values(quiet(make_tree(tmp_path / "tree")))
    assert_nothing_left(tmp_path / "tree")


TINY = """\
    from internlm.utils.utils import read_base

    with read_base():
        from configs._base_.default_runtime import *  # noqa: F401
        from configs._base_.models.internlm2_7B import *  # noqa: F401

    SEQ_LEN = 32
    model = dict(
        model,
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_kv_attention_heads=4,
        vocab_size=256,
        dtype="torch.float32",
        checkpoint=False,
    )
    data = dict(seq_len=SEQ_LEN, micro_num=1, micro_bsz=1, total_steps=2, train_folder=None)
    ckpt = dict(enable_save_ckpt=False, auto_resume=False)
    parallel = dict(zero1=dict(size=-1), tensor=1, pipeline=dict(size=1))
    run_dir = {run_dir!r}
"""


def test_a_base_config_trains(tmp_path):
    from internevo_jax.trainer import fit

    path = make_tree(tmp_path, demo=TINY.format(run_dir=str(tmp_path / "run")))
    cfg = quiet(path)
    assert cfg.model_type == "INTERNLM2" and cfg.model.rope_base == 1000000  # from the base
    result = fit(cfg, devices=jax.devices()[:1])
    assert len(result.losses) == 2
    assert all(math.isfinite(x) and abs(x - math.log(256)) < 0.5 for x in result.losses)
