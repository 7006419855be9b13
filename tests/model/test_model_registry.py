"""model_type registry and build_model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from model_helpers import make_cfg

from internevo_jax.model import MODEL_REGISTRY, InternLM, build_model, get_model_class, register_model


def test_internlm_is_registered():
    assert get_model_class("INTERNLM") is InternLM
    assert isinstance(build_model(make_cfg()), InternLM)


@pytest.mark.parametrize("name", ["INTERNLM9", "internlm", "INTRNLM"])
def test_unknown_model_type_names_the_closest(name):
    with pytest.raises(ValueError) as info:
        build_model(make_cfg(model_type=name))
    message = str(info.value)
    assert repr(name) in message and "'INTERNLM'" in message and "register_model" in message


class _Tiny(nn.Module):
    vocab: int

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.model.vocab_size)

    @nn.compact
    def __call__(self, input_ids, positions=None, segment_ids=None):
        return nn.Embed(self.vocab, 8)(input_ids) @ jnp.ones((8, self.vocab))


@pytest.fixture
def restore_registry():
    saved = dict(MODEL_REGISTRY)
    yield
    MODEL_REGISTRY.clear()
    MODEL_REGISTRY.update(saved)


def test_custom_model_by_decorator(restore_registry):
    register_model("TINY")(_Tiny)
    model = build_model(make_cfg(model_type="TINY"))
    assert isinstance(model, _Tiny) and model.vocab == 128
    ids = jnp.zeros((1, 4), jnp.int32)
    assert model.apply(model.init(jax.random.PRNGKey(0), ids), ids).shape == (1, 4, 128)


def test_custom_model_by_factory_function(restore_registry):
    register_model("TINY_FN", lambda cfg: _Tiny(7))
    assert build_model(make_cfg(model_type="TINY_FN")).vocab == 7
    with pytest.raises(ValueError, match="TINY_FN"):
        get_model_class("TINY_FM")


def test_from_hf_model_types_are_their_family_and_other_families_are_refused():
    # InternEvo's INTERNLM_FROM_HF wraps HF's InternLM: here the INTERNLM model, HF layout
    assert get_model_class("INTERNLM_FROM_HF") is InternLM
    assert get_model_class("LLAMA2_FROM_HF") is get_model_class("LLAMA2")
    with pytest.raises(ValueError, match="family 'DEEPSEEK3', which this project does not implement"):
        get_model_class("DEEPSEEK3_FROM_HF")


@pytest.mark.parametrize("name, what", [("LLAVA", "vision-language"), ("CHAMELEON", "mixed-modal")])
def test_internevo_multimodal_types_are_refused_by_name(name, what):
    with pytest.raises(ValueError, match=f"{name}.*{what}.*does not implement"):
        get_model_class(name)
