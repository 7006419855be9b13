"""The decoder-only language model shared by every model type: embedding -> decoder blocks ->
(final norm) -> untied head. Model types subclass `CausalLM` and only say how they read the config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.block import DecoderBlock
from internevo_jax.model.layers import Embedding, Head, make_norm, scale_grad
from internevo_jax.model.remat import remat_block
from internevo_jax.names import ACT_EMBED, ACT_VOCAB, LAYERS


def decoder_stack(args: ModelArgs, x, positions, segment_ids):
    """Run `args.num_layers` DecoderBlocks; must be called inside a compact module.

    Unrolled (default): modules layers_0 .. layers_{L-1}, one parameter set each; the first
    `args.remat_layers` are rematerialised. scan_layers: one module "layers" whose parameters
    carry a leading [L] axis (logical name "layers").
    """
    if args.scan_layers:
        body = DecoderBlock
        if args.remat_layers:
            body = remat_block(body, args.remat_policy, in_scan=True)
        scanned = nn.scan(
            body,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, 0),
            length=args.num_layers,
            metadata_params={nn.PARTITION_NAME: LAYERS},
        )
        layer_ids = jnp.arange(args.num_layers, dtype=jnp.int32)
        x, _ = scanned(args, scan_mode=True, name="layers")(x, positions, segment_ids, layer_ids)
        return x
    remat_cls = remat_block(DecoderBlock, args.remat_policy, in_scan=False)
    for i in range(args.num_layers):
        cls = remat_cls if i < args.remat_layers else DecoderBlock
        x = cls(args, name=f"layers_{i}")(x, positions, segment_ids, jnp.int32(i))
    return x


class CausalLM(nn.Module):
    """embedding -> decoder blocks -> norm (unless `args.final_norm` is off) -> head.

    Call with input_ids, positions, segment_ids, all [B, T] int32 (positions restart at 0 in
    every packed segment; segment id 0 marks padding). positions=None means 0..T-1 and
    segment_ids=None means one unpacked sequence per row. Returns logits [B, T, vocab] in the
    compute dtype.

    `family` names the parameter layout (what the HF converters key on): "INTERNLM",
    "INTERNLM2" or "LLAMA2".
    """

    args: ModelArgs
    family: ClassVar[str] = "INTERNLM"

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        a = self.args
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
        x = Embedding(a, name="embedding")(input_ids)
        x = nn.with_logical_constraint(scale_grad(x, a.embed_grad_scale), ACT_EMBED)
        x = decoder_stack(a, x, positions, segment_ids)
        if a.final_norm:
            x = make_norm(a, "norm")(x)
        logits = Head(a, name="head")(x)
        return nn.with_logical_constraint(logits, ACT_VOCAB)


def qk_interleaved_note(cfg: Any, model_type: str) -> list[str]:
    """The start-up note for qk_interleaved=True on models whose RoPE is always rotate-half here."""
    if not getattr(cfg.model, "qk_interleaved", False):
        return []
    return [
        f"model.qk_interleaved=True has no effect for {model_type}: RoPE always rotates the halves of each "
        "head (HF layout); a model trained either way is the same up to a fixed permutation of the wq/wk "
        "columns, and checkpoints here are always in the HF layout"
    ]
