"""ckpt_type="hf": load a Hugging Face model folder into the train state at training start."""

from __future__ import annotations

import logging

import jax

from internevo_jax.checkpoint.content import abstract_like, first_mismatch, named_shapes
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.storage import LocalLocation, parse_location
from internevo_jax.hf.importer import load_hf_params

logger = logging.getLogger("internevo_jax")


def load_hf_into(state, shardings, path: str, cfg, content: frozenset[str]):
    """Load Hugging Face weights into `state.params` (placed in `shardings.params`)."""
    location = parse_location(path, key="ckpt.load_ckpt_info.path")
    if not isinstance(location, LocalLocation):
        raise CheckpointError(
            f"Hugging Face weights are read from a local folder; {path} is not one. "
            f"Download the model folder first and point ckpt.load_ckpt_info.path at it."
        )
    if content - {"model"}:
        logger.warning(
            "a Hugging Face checkpoint holds weights only; ignoring %s in load_ckpt_info.content",
            ", ".join(sorted(content - {"model"})),
        )
    abstract = abstract_like(state.params, shardings.params)
    params = load_hf_params(location.path, cfg, abstract)
    problem = first_mismatch(named_shapes(params), named_shapes(abstract))
    if problem:
        raise CheckpointError(
            f"The Hugging Face weights in {location.path} do not fit this model: {problem}. "
            f"Check model_type and the model sizes in the config against the HF config.json."
        )
    logger.info("loaded Hugging Face weights from %s", location.path)
    return state.replace(params=jax.device_put(params, shardings.params))
