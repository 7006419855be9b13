"""Model tests compare fp32 results with float64 references: full-precision matmuls everywhere."""

import jax

jax.config.update("jax_default_matmul_precision", "highest")
