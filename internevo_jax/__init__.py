"""internevo_jax: pre-train and fine-tune InternLM-family LLMs with JAX (docs/architecture.md)."""

from internevo_jax.platforms import configure_host_platforms

configure_host_platforms()  # before jax starts a backend: see platforms.py
