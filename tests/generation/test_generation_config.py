"""The `generation` dict: InternEvo's keys typed with InternEvo's defaults, bad values refused in one
paragraph naming the key, keys without effect reported."""

from __future__ import annotations

import pytest

from internevo_jax.config import ConfigError, GenerationConfig, config_from_dict

# InternEvo's configs/7B_internlm2.py
INTERNEVO_DICT = dict(
    ckpt_folder="/path/to/saved/ckpt",
    output_folder="/path/to/save/generation",
    batch_size=1,
    eos_id=[2, 0],
    bos_id=1,
    max_length=100,
    do_sample=True,
    temperature=1.0,
    top_k=50,
    top_p=1.0,
    repetition_penalty=1,
    length_penalty=1.0,
)


def load(generation=None, **top):
    raw = dict(top)
    if generation is not None:
        raw["generation"] = generation
    lines = []
    cfg = config_from_dict(raw, "cfg.py", log=lines.append)
    return cfg, lines


def test_internevo_dict_loads_typed():
    cfg, lines = load(INTERNEVO_DICT)
    g = cfg.generation
    assert g.eos_id == (2, 0) and g.repetition_penalty == 1.0 and isinstance(g.repetition_penalty, float)
    assert (g.batch_size, g.bos_id, g.max_length, g.top_k, g.do_sample) == (1, 1, 100, 50, True)
    # the dataset mode's folder is reported, the keys that act are not
    assert "generation.output_folder" in cfg.no_effect_keys
    assert not any(k in cfg.no_effect_keys for k in ("generation", "generation.top_k", "generation.eos_id"))
    assert any("generation.output_folder" in line for line in lines)


def test_defaults_are_internevos_and_absent_dict_is_none():
    assert load()[0].generation is None
    g = load({})[0].generation
    assert g == GenerationConfig()
    assert (g.eos_id, g.bos_id, g.max_length, g.do_sample, g.temperature, g.top_k, g.top_p) == (
        (2,),
        1,
        100,
        True,
        1.0,
        50,
        1.0,
    )
    assert load({"eos_id": 7})[0].generation.eos_id == (7,)  # one id is a list of one


def test_set_override_reaches_the_section():
    cfg = config_from_dict({}, "cfg.py", overrides=["generation.top_k=5"], log=lambda *a: None)
    assert cfg.generation.top_k == 5


@pytest.mark.parametrize(
    "values, key, words",
    [
        (dict(temperature=0.0), "generation.temperature", "greater than 0 when sampling"),
        (dict(top_p=0.0), "generation.top_p", "(0, 1]"),
        (dict(top_p=1.5), "generation.top_p", "(0, 1]"),
        (dict(max_length=0), "generation.max_length", "1 or more"),
        (dict(batch_size=0), "generation.batch_size", "1 or more"),
        (dict(top_k=-1), "generation.top_k", "0 (off) or more"),
        (dict(repetition_penalty=0), "generation.repetition_penalty", "greater than 0"),
        (dict(num_beams=4), "generation.num_beams", "beam search is not implemented"),
        (dict(eos_id=[2, 50304]), "generation.eos_id", "outside the model's vocabulary"),
        (dict(eos_id="2"), "generation.eos_id", "a list of integers"),
        (dict(topk=5), "generation.topk", "Did you mean 'generation.top_k'?"),
    ],
)
def test_bad_values_are_refused_in_one_paragraph(values, key, words):
    with pytest.raises(ConfigError) as e:
        load(values)
    assert e.value.key == key and words in str(e.value) and "\n" not in str(e.value)


def test_greedy_needs_no_positive_temperature():
    assert load(dict(do_sample=False, temperature=0.0))[0].generation.do_sample is False
