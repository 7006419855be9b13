"""Activation rematerialisation (InternEvo's `checkpoint`) for decoder blocks."""

from __future__ import annotations

import flax.linen as nn
import jax

from internevo_jax.names import REMAT_POLICY_NAMES

# The jax policy of each name in names.REMAT_POLICY_NAMES. "save_matmuls" keeps the outputs of the
# dots without batch dimensions (the q/k/v/o and MLP projections); attention scores, norms and
# activations are recomputed.
REMAT_POLICIES = dict(
    zip(
        REMAT_POLICY_NAMES,
        (
            jax.checkpoint_policies.nothing_saveable,
            jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
            None,
        ),
        strict=True,
    )
)


def remat_block(block_cls: type[nn.Module], policy_name: str, *, in_scan: bool) -> type[nn.Module]:
    """`block_cls` wrapped in nn.remat with the named policy ("none" returns it unchanged).

    Inside a scan the loop boundary already stops XLA from merging the recomputation with the
    forward pass, so prevent_cse is off there (the flax-recommended setting); unrolled blocks
    need it on.
    """
    if policy_name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat_policy {policy_name!r}; choose one of {sorted(REMAT_POLICIES)}")
    if policy_name == "none":
        return block_cls
    return nn.remat(block_cls, policy=REMAT_POLICIES[policy_name], prevent_cse=not in_scan)
