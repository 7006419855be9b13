"""The model's own hyper-parameters, read once from the run's Config.

Modules hold a frozen, hashable `ModelArgs` instead of the Config itself: flax lifted
transforms (remat, scan) compare and hash module attributes, and a model that only sees the
numbers it needs can be built without a whole Config (tests, notebooks, conversion tools).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from internevo_jax.model.moe.settings import MoEArgs, moe_args_from_config
from internevo_jax.names import (
    GELU,
    MLP_ACTIVATIONS,
    NORM_TYPES,
    QKV_GROUPED,
    QKV_LAYOUTS,
    QKV_SEPARATE,
    REMAT_FULL,
    REMAT_POLICY_NAMES,
    RMSNORM,
    SILU,
)

# InternEvo's InternLM1 init (modeling_internlm.py): embedding/head 0.0052; Wqkv, w1, w3 0.006;
# wo and w2 0.006 / sqrt(2 * (layer + 1)) with use_scaled_init, else a flat 0.0015.
INTERNLM_EMBED_STD = 0.0052
INTERNLM_PROJ_STD = 0.006
INTERNLM_UNSCALED_OUT_STD = 0.0015


@dataclasses.dataclass(frozen=True)
class InitStds:
    """A model family's default init stds (the `*_init_std` config keys override them)."""

    embed: float
    head: float
    proj: float  # wq/wk/wv (or wqkv), w1, w3, and wo/w2 before depth scaling
    unscaled_out: float  # wo and w2 when use_scaled_init=False


INTERNLM_INIT = InitStds(INTERNLM_EMBED_STD, INTERNLM_EMBED_STD, INTERNLM_PROJ_STD, INTERNLM_UNSCALED_OUT_STD)
# InternEvo's InternLM2 and LLaMA2 builders default every std to 0.02, scaled or not.
INTERNEVO_02_INIT = InitStds(0.02, 0.02, 0.02, 0.02)
# The model types whose layers are mixtures of experts (model/internlm_moe.py, mixtral.py, qwen.py).
MOE_MODEL_TYPES = ("INTERNLM_MoE", "MIXTRALMOE", "QWEN2MOE", "QWEN3MOE")


@dataclasses.dataclass(frozen=True)
class FamilyDefaults:
    """A model family's answers to the model keys a config may leave unset (None).

    None here too means "follow no_bias" for the biases. `fused_layout` is how the family stores
    one fused wqkv (model.enable_qkv_fusion=True); `qkv_fusion` whether it does by default.
    """

    qkv_bias: bool | None = None
    o_bias: bool | None = None
    qkv_fusion: bool = False
    fused_layout: str = QKV_GROUPED
    qk_norm: bool = False
    tie_embeddings: bool = False
    norm_head: bool = False
    # Mixture of experts: whether the family has MoE layers (num_experts > 1), and how its shared
    # experts join the routed ones (model/moe/settings.py SHARED_MIX).
    moe: bool = False
    moe_shared_mix: str = "softmax2"


@dataclasses.dataclass(frozen=True)
class ModelArgs:
    """Everything a decoder model needs to know; docs/model.md describes each field."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_hidden_size: int
    norm_type: str = RMSNORM
    norm_eps: float = 1e-5
    fp32_norm: bool = True
    rope_base: float = 10000.0
    # Dynamic NTK RoPE (InternEvo's use_dynamic_ntk_rope): the base grows once a sequence
    # reaches past max_position_embeddings; InternEvo fixes the scaling factor at 1.0.
    dynamic_ntk: bool = False
    max_position_embeddings: int = 2048
    rope_scaling_factor: float = 1.0
    qkv_layout: str = QKV_SEPARATE  # names.QKV_LAYOUTS: wq/wk/wv, or one wqkv (grouped or concat)
    qkv_bias: bool = True
    out_bias: bool = True
    # RoPE rotates adjacent lanes (2i, 2i+1) of each q/k head (InternEvo's qk_interleaved=True:
    # the checkpoint keeps the original column order) instead of the halves (i, i + D/2: HF's).
    qk_interleaved: bool = False
    qk_norm: bool = False  # RMSNorm over head_dim of every q and k head, before RoPE (Qwen3)
    norm_unit_offset: bool = False  # RMSNorm scales by (1 + w), w starting at 0 (Gemma)
    mlp_activation: str = SILU  # names.MLP_ACTIVATIONS: SwiGLU or GeGLU
    tie_embeddings: bool = False  # the head is the embedding table, transposed
    embed_scale: bool = False  # the embedding output is multiplied by sqrt(hidden_size) (Gemma)
    norm_head: bool = False  # the head's vocab rows are L2-normalised before use (Baichuan2)
    post_norm: bool = False
    final_norm: bool = True  # InternEvo drops the final norm of post-norm InternLM2 / LLaMA2
    residual_in_fp32: bool = False
    embed_grad_scale: float = 1.0
    # init: N(0, std); wo/w2 divide their std by sqrt(2 * (layer + 1)) when scaled_init.
    embed_init_std: float = INTERNLM_EMBED_STD
    head_init_std: float = INTERNLM_EMBED_STD
    qkv_init_std: float = INTERNLM_PROJ_STD
    out_init_std: float = INTERNLM_PROJ_STD
    ffn_up_init_std: float = INTERNLM_PROJ_STD
    ffn_down_init_std: float = INTERNLM_PROJ_STD
    scaled_init: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: str | None = None
    checkpoint_layers: int = 0
    remat_policy: str = REMAT_FULL
    scan_layers: bool = False
    attn_impl: str = "auto"
    use_flash_attn: bool = True
    # Keys further back than this many tokens (counting the query itself) are not attended
    # (Qwen2 / Mistral sliding-window attention); None: the whole causal prefix.
    sliding_window: int | None = None
    # Only layers with index >= max_window_layers use the sliding window (Qwen2's meaning).
    max_window_layers: int = 0
    # Packed rows are whole windows of this many tokens, each its own segment (data.
    # pack_sample_into_one=True; validation rows): attention runs per window with a plain
    # causal mask. 0: segments follow the data. Rows without segment ids are never cut.
    fixed_window_len: int = 0
    # A pipeline chunk (CausalLM.chunk): its layers run under the schedule's stage vmap, where
    # some kernels cannot run (their support checks say so).
    pipeline_chunk: bool = False
    platform: str | None = None
    # Mixture of experts (model/moe/): every layer's MLP is an MoE layer when set.
    moe: MoEArgs | None = None

    def __post_init__(self):
        problems = []
        if self.num_heads <= 0 or self.num_kv_heads <= 0:
            problems.append(f"head counts must be positive (got {self.num_heads}, {self.num_kv_heads})")
        elif self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_attention_heads ({self.num_kv_heads})"
            )
        if self.dynamic_ntk and self.max_position_embeddings <= 0:
            problems.append(
                f"max_position_embeddings ({self.max_position_embeddings}) must be positive with dynamic NTK RoPE"
            )
        if self.head_dim % 2:
            problems.append(f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        if self.norm_type not in NORM_TYPES:
            problems.append(f"norm_type {self.norm_type!r} is not one of {NORM_TYPES}")
        if self.remat_policy not in REMAT_POLICY_NAMES:
            problems.append(f"remat_policy {self.remat_policy!r} is not one of {REMAT_POLICY_NAMES}")
        if not 0 <= self.checkpoint_layers <= self.num_layers:
            problems.append(f"checkpoint_layers {self.checkpoint_layers} is outside [0, {self.num_layers}]")
        if self.scan_layers and self.remat_layers not in (0, self.num_layers):
            # A partly rematerialised stack would need two scans and two parameter groups;
            # one scan with one policy keeps the stacked tree a single "layers" entry.
            problems.append(
                f"scan_layers=True needs checkpoint to cover all {self.num_layers} layers or none, "
                f"but it covers {self.checkpoint_layers}; set model.checkpoint to True or False, "
                "or set scan_layers=False"
            )
        if self.qkv_layout not in QKV_LAYOUTS:
            problems.append(f"qkv_layout {self.qkv_layout!r} is not one of {QKV_LAYOUTS}")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            problems.append(f"mlp_activation {self.mlp_activation!r} is not one of {MLP_ACTIVATIONS}")
        if self.tie_embeddings and self.norm_head:
            problems.append("a normalised head (norm_head) cannot be tied to the embedding table")
        if (
            self.scan_layers
            and self.sliding_window is not None
            and 0 < self.max_window_layers < self.num_layers
        ):
            # One scanned body runs every layer: a static window cannot differ between layers.
            problems.append(
                f"scan_layers=True (needed by pipeline parallelism) runs one layer definition for all "
                f"{self.num_layers} layers, but the sliding window covers only layers {self.max_window_layers} "
                f"and up (max_window_layers={self.max_window_layers}); set max_window_layers to 0 (every "
                f"layer windowed) or >= {self.num_layers} (none), or set scan_layers=False"
            )
        if self.fixed_window_len < 0:
            problems.append(
                f"fixed_window_len ({self.fixed_window_len}) must be 0 or a positive window length"
            )
        if problems:
            raise ValueError("invalid model settings: " + "; ".join(problems))

    def replace_mlp(self, width: int) -> ModelArgs:
        """These args with a dense MLP of `width` (an MoE model's shared experts)."""
        return dataclasses.replace(self, mlp_hidden_size=width, moe=None)

    @property
    def remat_layers(self) -> int:
        """How many leading layers are rematerialised (0 when remat_policy is "none")."""
        return 0 if self.remat_policy == "none" else self.checkpoint_layers

    def window_for(self, seq_len: int | None) -> int | None:
        """The window attention runs on for packed rows of `seq_len` tokens: fixed_window_len when
        the rows are whole windows of it, else None (the rows keep their segment ids; same maths)."""
        w = self.fixed_window_len
        if w and seq_len is not None and seq_len >= w and seq_len % w == 0:
            return w
        return None

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of layer `layer` (None: the whole causal prefix)."""
        return self.sliding_window if layer >= self.max_window_layers else None

    @property
    def residual_dtype(self) -> Any:
        """dtype of the residual stream between blocks."""
        return jnp.float32 if self.residual_in_fp32 else self.dtype

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        *,
        init: InitStds = INTERNLM_INIT,
        family: FamilyDefaults | None = None,
        **overrides: Any,
    ) -> ModelArgs:
        """Read the model settings of a Config (`cfg.model`, `cfg.use_fp32_norm`, and from
        `cfg.data` whether segments are the fixed seq_len windows).

        `init` holds the model family's default init stds and `family` its answers to the keys a
        config may leave unset (None); `overrides` set fields a model type fixes itself (e.g.
        Gemma's embedding scale). Every other value comes from the typed config field of the same
        name (config/schema.py holds the defaults, once).
        """
        check_supported(cfg)
        m = cfg.model
        fam = family or FamilyDefaults()

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        fused = pick(m.enable_qkv_fusion, fam.qkv_fusion)
        moe = None
        if m.num_experts > 1:
            if not fam.moe:
                raise ValueError(
                    f"model.num_experts={m.num_experts} needs a mixture-of-experts model_type "
                    f"({', '.join(MOE_MODEL_TYPES)}); model_type {cfg.model_type!r} is dense: set "
                    "num_experts=1 or choose an MoE model_type"
                )
            # InternEvo's routers and shared-expert gates take the flat std of the "other" FFN weights.
            router_std = init.unscaled_out if m.ffn_other_init_std is None else float(m.ffn_other_init_std)
            moe = moe_args_from_config(cfg, shared_mix=fam.moe_shared_mix, router_init_std=router_std)
        window = int(m.sliding_window) if m.use_sliding_window else None
        window_layers = int(m.max_window_layers)
        if window is not None and window_layers >= int(m.num_layers):
            window, window_layers = None, 0  # no layer reaches the windowed ones
        heads = int(m.num_attention_heads)
        # With use_scaled_init=False InternEvo's InternLM1 gives wo and w2 a flat, smaller std.
        out_default = init.proj if m.use_scaled_init else init.unscaled_out

        def std(value: float | None, default: float) -> float:
            return float(default if value is None else value)

        values = dict(
            vocab_size=int(m.vocab_size),
            hidden_size=int(m.hidden_size),
            num_layers=int(m.num_layers),
            num_heads=heads,
            num_kv_heads=int(m.num_kv_attention_heads or heads),
            head_dim=int(m.head_dim),
            mlp_hidden_size=int(m.mlp_hidden_size),
            norm_type=str(m.norm_type).lower(),
            norm_eps=float(m.layer_norm_epsilon),
            fp32_norm=bool(cfg.use_fp32_norm),
            rope_base=float(m.rope_base),
            dynamic_ntk=bool(m.use_dynamic_ntk_rope),
            max_position_embeddings=int(m.max_position_embeddings),
            qkv_layout=fam.fused_layout if fused else QKV_SEPARATE,
            qkv_bias=bool(pick(m.qkv_bias, pick(fam.qkv_bias, not m.no_bias))),
            out_bias=bool(pick(m.o_bias, pick(fam.o_bias, not m.no_bias))),
            qk_interleaved=bool(m.qk_interleaved),
            qk_norm=bool(pick(m.qk_norm, fam.qk_norm)),
            norm_unit_offset=bool(m.add_unit_offset),
            mlp_activation=SILU if m.use_swiglu else GELU,
            tie_embeddings=bool(pick(m.tie_word_embeddings, fam.tie_embeddings)),
            norm_head=bool(m.norm_head or fam.norm_head),
            sliding_window=window,
            max_window_layers=window_layers,
            residual_in_fp32=bool(m.residual_in_fp32),
            embed_grad_scale=float(m.embed_grad_scale),
            embed_init_std=std(m.embedding_init_std, init.embed),
            head_init_std=std(m.out_head_init_std, init.head),
            qkv_init_std=std(m.attn_wqkv_init_std, init.proj),
            out_init_std=std(m.attn_other_init_std, out_default),
            ffn_up_init_std=std(m.ffn_uplayer_init_std, init.proj),
            ffn_down_init_std=std(m.ffn_other_init_std, out_default),
            scaled_init=bool(m.use_scaled_init),
            dtype=m.compute_dtype,
            precision=m.matmul_precision,
            checkpoint_layers=int(m.checkpoint_layers),
            remat_policy=str(m.remat_policy),
            scan_layers=bool(m.scan_layers),
            attn_impl=str(m.attn_impl or "auto"),
            use_flash_attn=bool(m.use_flash_attn),
            fixed_window_len=int(cfg.data.seq_len) if cfg.data.pack_sample_into_one else 0,
            moe=moe,
        )
        values.update(overrides)
        return cls(**values)


# (setting, value that is implemented, why a different value is refused)
_UNSUPPORTED = (
    ("drop_rate", 0, "dropout is not implemented"),
    ("attn_drop_rate", 0, "attention dropout is not implemented"),
    ("init_type", "normal", "only normal initialisation is implemented"),
)


def check_supported(cfg: Any) -> None:
    """Refuse model settings that would change the maths but are not implemented.

    Running without them would silently train a different model, so this raises a ValueError
    naming every such setting and the value that works.
    """
    m = cfg.model
    problems = []
    for key, good, why in _UNSUPPORTED:
        value = getattr(m, key)  # the names in _UNSUPPORTED are ModelConfig fields
        if value != good:
            problems.append(f"model.{key}={value!r}: {why}; use {good!r}")
    if problems:
        raise ValueError("unsupported model settings: " + "; ".join(problems))
