"""Generation with a key/value cache: sampling rules, the token loop, and the settings of InternEvo's
`generation` config dict (`python -m internevo_jax.generate` is the command line; docs/generation.md).

    from internevo_jax.generation import Sampling, generate_ids
    new = generate_ids(model, params, [[1, 5, 9], [1, 7]], budgets=[16, 16], sampling=Sampling())
"""

from internevo_jax.generation.loop import decode_model, generate_ids, generate_padded, strip_eos
from internevo_jax.generation.sampling import Sampling, choose, top_k_filter, top_p_filter

__all__ = [
    "Sampling",
    "choose",
    "decode_model",
    "generate_ids",
    "generate_padded",
    "strip_eos",
    "top_k_filter",
    "top_p_filter",
]
