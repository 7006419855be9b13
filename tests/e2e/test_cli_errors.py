"""Bad input at the command line: each gets a one-paragraph error naming the key or file, exit 2."""

import pytest
from cli_helpers import REPO, TINY, run_train, sets

SFT = str(REPO / "configs/7b_sft.py")


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_unknown_key_in_file_names_the_closest(tmp_path):
    cfg = tmp_path / "typo.py"
    cfg.write_text("data = dict(seq_len=32, micro_bz=2)\n")
    assert_user_error(run_train(["--config", str(cfg)]), "data.micro_bz", "micro_bsz", str(cfg))


def test_unknown_key_in_override():
    assert_user_error(
        run_train(["--config", SFT, *sets("model.hiden_size=8")]), "model.hiden_size", "hidden_size"
    )


def test_wrong_type():
    assert_user_error(run_train(["--config", SFT, *sets("data.micro_bsz='two'")]), "data.micro_bsz")


def test_layers_not_divisible_by_chunks():
    proc = run_train(["--config", SFT, *sets(*TINY, "model.num_chunks=3")])
    assert_user_error(proc, "num_chunks")


def test_world_size_does_not_split():
    proc = run_train(["--config", SFT, *sets(*TINY, "parallel.tensor=3")], devices=8)
    assert_user_error(proc, "8")
    assert "tensor" in proc.stderr


def test_zero1_not_a_divisor():
    proc = run_train(["--config", SFT, *sets(*TINY, "parallel.zero1=3")], devices=8)
    assert_user_error(proc, "zero1")


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.py"
    assert_user_error(run_train(["--config", str(missing)]), str(missing))


def test_config_file_with_syntax_error(tmp_path):
    cfg = tmp_path / "broken.py"
    cfg.write_text("data = dict(seq_len=32,\n")
    assert_user_error(run_train(["--config", str(cfg)]), str(cfg))


def test_malformed_override():
    assert_user_error(run_train(["--config", SFT, "--set", "data.micro_bsz"]), "data.micro_bsz")


def test_missing_train_folder(tmp_path):
    missing = tmp_path / "no_data"
    proc = run_train(["--config", SFT, *sets(*TINY, f"data.train_folder='{missing}'")])
    assert_user_error(proc, str(missing))


def test_unknown_model_type():
    proc = run_train(["--config", SFT, *sets(*TINY, "model_type='INTERNLM9'")])
    assert_user_error(proc, "INTERNLM9", "INTERNLM")


@pytest.mark.parametrize("backend", ["cudnn"])
def test_unsupported_attention_backend_fails_loudly(backend):
    proc = run_train(["--config", SFT, *sets(*TINY, f"model.attn_impl='{backend}'")])
    assert_user_error(proc, backend)
