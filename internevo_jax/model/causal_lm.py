"""The decoder-only language model shared by every model type: embedding -> decoder blocks ->
(final norm) -> head (its own kernel, or the embedding table when tied). Model types subclass
`CausalLM` and say how they read the config and, if theirs differs, which block class they stack.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from internevo_jax.model.args import ModelArgs
from internevo_jax.model.block import DecoderBlock
from internevo_jax.model.layers import Embedding, Head, make_norm, scale_grad
from internevo_jax.model.moe.layer import MOE_COLLECTION
from internevo_jax.model.remat import remat_block
from internevo_jax.names import ACT_EMBED, ACT_VOCAB, LAYERS


def decoder_layers(args: ModelArgs, block_cls: type[nn.Module]) -> nn.Module | list[nn.Module]:
    """The `args.num_layers` blocks, to assign to a module's `layers` attribute in `setup`.

    Unrolled (default): a list, which flax names layers_0 .. layers_{L-1}, one parameter set
    each; the first `args.remat_layers` are rematerialised. scan_layers: one scanned module whose
    parameters carry a leading [L] axis (logical name "layers"), called with the layer ids [L]
    (ModelArgs refuses a scan over layers whose sliding windows differ).
    """
    if args.scan_layers:
        args = layer_args(args, 0)
        body = block_cls
        if args.remat_layers:
            body = remat_block(body, args.remat_policy, in_scan=True)
        scanned = nn.scan(
            body,
            variable_axes={"params": 0, MOE_COLLECTION: 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, 0),
            length=args.num_layers,
            metadata_params={nn.PARTITION_NAME: LAYERS},
        )
        return scanned(args, scan_mode=True)
    remat_cls = remat_block(block_cls, args.remat_policy, in_scan=False)
    return [
        (remat_cls if i < args.remat_layers else block_cls)(layer_args(args, i))
        for i in range(args.num_layers)
    ]


def layer_args(args: ModelArgs, layer: int) -> ModelArgs:
    """The args layer `layer` runs with: its own sliding window (Qwen2's max_window_layers)."""
    window = args.layer_window(layer)
    return args if window == args.sliding_window else dataclasses.replace(args, sliding_window=window)


class CausalLM(nn.Module):
    """embedding -> decoder blocks -> norm (unless `args.final_norm` is off) -> head (the
    embedding table transposed when `args.tie_embeddings`).

    Call with input_ids, positions, segment_ids, all [B, T] int32 (positions restart at 0 in
    every packed segment; segment id 0 marks padding). positions=None means 0..T-1 and
    segment_ids=None means one unpacked sequence per row. Returns logits [B, T, vocab] in the
    compute dtype.

    The call is `logits(stage(embed(input_ids), ...))`; a pipeline runs the same three methods
    (`model.apply(variables, ..., method="embed")`, ...), `stage` on a `chunk` of the model.
    `hidden` is `stage(embed(...))`; `head_inputs` replaces `logits` for a loss that applies
    the head itself (the chunked cross-entropy).

    `family` names the parameter layout (what the HF converters key on, hf/families/): "INTERNLM",
    "INTERNLM2", "LLAMA2", "QWEN2", ... `block_cls` is the layer a model type stacks: a Module taking
    `(args, scan_mode=...)`, called with (x, positions, segment_ids, layer_idx), returning
    (out, None) when scan_mode is set (see `DecoderBlock`).
    """

    args: ModelArgs
    family: ClassVar[str] = "INTERNLM"
    block_cls: ClassVar[type[nn.Module]] = DecoderBlock

    def setup(self):
        a = self.args
        self.embedding = Embedding(a)
        self.layers = decoder_layers(a, self.block_cls)
        if a.final_norm:
            self.norm = make_norm(a)
        if not a.tie_embeddings:
            self.head = Head(a)

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        return self.logits(self.hidden(input_ids, positions, segment_ids))

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """ids [..., B, T] -> hidden [..., B, T, hidden]; the gradient is scaled by embed_grad_scale.

        Leading axes (a pipeline's micro-batches) are left unsplit.
        """
        x = scale_grad(self.embedding(input_ids), self.args.embed_grad_scale)
        return nn.with_logical_constraint(x, (None,) * (input_ids.ndim - 2) + ACT_EMBED)

    def stage(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
        """hidden [B, T, hidden] -> hidden through this model's `args.num_layers` blocks."""
        if self.args.scan_layers:
            layer_ids = jnp.arange(self.args.num_layers, dtype=jnp.int32)
            x, _ = self.layers(x, positions, segment_ids, layer_ids)
            return x
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, segment_ids, jnp.int32(i))
        return x

    def hidden(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """`stage(embed(input_ids))`: the hidden states [B, T, hidden] before the final norm, what
        `logits` and `head_inputs` take."""
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
        return self.stage(self.embed(input_ids), positions, segment_ids)

    def logits(self, x: jax.Array) -> jax.Array:
        """hidden [B, T, hidden] -> logits [B, T, vocab]: the final norm (if any), then the head."""
        normed, kernel = self.head_inputs(x)
        logits = jnp.einsum("btd,dv->btv", normed, kernel, precision=self.args.precision)
        return nn.with_logical_constraint(logits, ACT_VOCAB)

    def head_inputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """hidden [B, T, hidden] -> (the final norm's output [B, T, hidden], the head kernel
        [hidden, vocab]), both in the compute dtype, the kernel's gradient scaled as in the head:
        `logits(x)` is their product, which a fused loss (trainer/chunked_loss.py) forms chunk by
        chunk instead."""
        if self.args.final_norm:
            x = self.norm(x)
        kernel = self.embedding.head_weight() if self.args.tie_embeddings else self.head.weight()
        return x.astype(self.args.dtype), kernel

    def chunk(self, num_layers: int) -> CausalLM:
        """This model with `num_layers` layers: its `stage` runs a pipeline chunk of stacked layers
        on params {"layers": [num_layers, ...]} (the whole chunk rematerialised if the model is)."""
        a = self.args
        remat = num_layers if a.remat_layers else 0
        chunk_args = dataclasses.replace(
            a, num_layers=num_layers, checkpoint_layers=remat, pipeline_chunk=True
        )
        return self.clone(args=chunk_args)

    def windowed(self, window_len: int) -> CausalLM:
        """This model for rows made of fixed `window_len`-token windows (validation rows): the
        same parameters, attention run per window without a mask (`ModelArgs.fixed_window_len`)."""
        return self.clone(args=dataclasses.replace(self.args, fixed_window_len=int(window_len)))


def post_norm_overrides(cfg) -> dict:
    """InternEvo's apply_post_layer_norm for the families that honour it (INTERNLM2, LLAMA2, QWEN2,
    ...): post-norm blocks, and then no final norm."""
    post = bool(cfg.model.apply_post_layer_norm)
    return {"post_norm": post, "final_norm": not post}
