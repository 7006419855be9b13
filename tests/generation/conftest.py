"""Generation tests compare fp32 logits and argmaxes: full-precision matmuls on the JAX side."""

import jax

jax.config.update("jax_default_matmul_precision", "highest")
