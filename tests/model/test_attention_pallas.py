"""The segment-aware Pallas flash attention (interpret mode on CPU) against the XLA reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internevo_jax.model import select_attention_backend
from internevo_jax.model.attention import pallas_gpu, xla_attention
from internevo_jax.model.attention.pallas_gpu import BlockSizes, kernel_tile_counts, pallas_attention
from internevo_jax.model.attention.tiles import tile_ranges, visited_tiles

SMALL = BlockSizes(32, 32, 32, 32)  # several tiles per row at T=128
D = 64


def _layout(name: str, t: int) -> np.ndarray:
    """Segment ids [2, t] of one named layout (row 1 is always a different layout than row 0)."""
    lengths = {
        "one": [t],
        "many_short": [5, 7, 3, 9, 6, 11, 4, 8] * (t // 53) + [t - 53 * (t // 53)],
        "cross_blocks": [40, 33, 31, 24],  # boundaries at 40, 73, 104: inside blocks of 32
        "length_one": [31, 1, 1, 50, 1, 44],
    }[name]
    assert sum(lengths) == t, (name, lengths)
    row0 = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    row1 = np.repeat([1, 2, 0], [t // 2, t // 4, t - t // 2 - t // 4])  # ends in padding (id 0)
    return np.stack([row0, row1]).astype(np.int32)


def _inputs(dtype, t=128, heads=8, kv_heads=2, seed=0, head_dim=D):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(2, t, heads, head_dim)), dtype)
    k = jnp.asarray(rng.normal(size=(2, t, kv_heads, head_dim)), dtype)
    v = jnp.asarray(rng.normal(size=(2, t, kv_heads, head_dim)), dtype)
    return q, k, v


def _loss(fn):
    # A non-linear read of the output, so every output element gets a different cotangent.
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v).astype(jnp.float32)))


TOLERANCE = {
    jnp.float32: dict(rtol=1e-5, atol=1e-5),
    jnp.bfloat16: dict(rtol=2e-2, atol=2e-2),
    jnp.float16: dict(rtol=5e-3, atol=5e-3),
}
CASES = [
    (layout, dtype, D)
    for layout in ("one", "many_short", "cross_blocks", "length_one")
    for dtype in (jnp.float32, jnp.bfloat16)
]
CASES += [("cross_blocks", jnp.float16, D), ("many_short", jnp.bfloat16, 128)]


@pytest.mark.parametrize("layout,dtype,head_dim", CASES)
def test_forward_and_grads_match_xla(layout, dtype, head_dim):
    q, k, v = _inputs(dtype, head_dim=head_dim)
    seg = jnp.asarray(_layout(layout, q.shape[1]))
    scale = head_dim**-0.5
    ours = lambda q, k, v: pallas_attention(q, k, v, seg, scale=scale, block_sizes=SMALL, interpret=True)  # noqa: E731
    ref = lambda q, k, v: xla_attention(q, k, v, seg, scale=scale)  # noqa: E731
    tol = TOLERANCE[dtype]
    out, want = ours(q, k, v), ref(q, k, v)
    assert out.dtype == q.dtype and out.shape == q.shape
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32), **tol)
    for got, exp in zip(jax.grad(_loss(ours), (0, 1, 2))(q, k, v), jax.grad(_loss(ref), (0, 1, 2))(q, k, v)):
        assert got.dtype == dtype
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(exp, np.float32), **tol)
    # The layouts are ones where attention leaking across segments changes the answer.
    leaked = xla_attention(q, k, v, None, scale=scale)
    assert float(jnp.abs(leaked.astype(jnp.float32) - want.astype(jnp.float32)).max()) > 0.1


@pytest.mark.parametrize("window", [1, 17, 64])
def test_sliding_window_matches_xla(window):
    q, k, v = _inputs(jnp.float32, heads=4, kv_heads=4, seed=1)
    seg = jnp.asarray(np.repeat([[1, 2]], [100, 28], axis=1).repeat(2, 0))  # longer than every window
    kw = dict(scale=0.2, sliding_window=window)
    ours = lambda q, k, v: pallas_attention(q, k, v, seg, block_sizes=SMALL, interpret=True, **kw)  # noqa: E731
    ref = lambda q, k, v: xla_attention(q, k, v, seg, **kw)  # noqa: E731
    np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)
    for got, exp in zip(jax.grad(_loss(ours), (0, 1, 2))(q, k, v), jax.grad(_loss(ref), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(ref(q, k, v) - xla_attention(q, k, v, seg, scale=0.2)).max()) > 0.05


def test_unpacked_and_unaligned_lengths_are_padded():
    # T = 100 is no multiple of the 32-blocks: the tail is padded with an invisible segment.
    q, k, v = _inputs(jnp.float32, t=100, heads=4, kv_heads=1, seed=2)
    for seg in (None, jnp.asarray(np.repeat([[1, 2, 3]], [30, 45, 25], axis=1).repeat(2, 0))):
        ours = functools.partial(
            pallas_attention, segment_ids=seg, scale=0.125, block_sizes=SMALL, interpret=True
        )
        ref = functools.partial(xla_attention, segment_ids=seg, scale=0.125)
        np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)
        for got, exp in zip(
            jax.grad(_loss(ours), (0, 1, 2))(q, k, v), jax.grad(_loss(ref), (0, 1, 2))(q, k, v)
        ):
            np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-5)


def test_noncontiguous_segment_ids_follow_the_reference():
    # The same id in two separate runs is one segment for every backend (ids compare equal).
    q, k, v = _inputs(jnp.float32, heads=2, kv_heads=2, seed=3)
    seg = jnp.asarray(np.repeat([[1, 2, 1, 3]], [30, 40, 20, 38], axis=1).repeat(2, 0))
    ours = pallas_attention(q, k, v, seg, scale=0.125, block_sizes=SMALL, interpret=True)
    np.testing.assert_allclose(ours, xla_attention(q, k, v, seg, scale=0.125), rtol=1e-5, atol=1e-5)


def test_tiles_run_only_inside_segments():
    """Segments [1024, 512, 1536, 1024] at T=4096 with 128-tiles: a segment of n blocks costs
    n (n + 1) / 2 tiles, so 36 + 10 + 78 + 36 = 160 instead of the 528 causal tiles."""
    lengths = [1024, 512, 1536, 1024]
    seg = np.repeat(np.arange(1, 5), lengths)[None].astype(np.int32)
    want = sum((n // 128) * (n // 128 + 1) // 2 for n in lengths)
    assert want == 160
    counts = visited_tiles(seg, 128, 128)
    assert counts == {"forward": 160, "dq": 160, "dkdv": 160, "dense": 528}
    # The forward kernel itself reports how many key tiles each query block ran.
    q = jnp.ones((1, 4096, 1, D), jnp.float32)
    ran = kernel_tile_counts(q, q, q, jnp.asarray(seg), scale=0.1, block_sizes=BlockSizes(128, 128, 128, 128))
    assert int(ran.sum()) == 160
    np.testing.assert_array_equal(np.asarray(ran[0, 0]), np.asarray(counts_per_block(seg)))


def counts_per_block(seg: np.ndarray) -> np.ndarray:
    """Analytic key tiles per 128-query block: from its segment's first block to itself."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(seg[0])) + 1])
    first_block_of = np.searchsorted(starts, np.arange(seg.shape[1]), side="right") - 1
    block_first_token = np.arange(0, seg.shape[1], 128)
    return np.array([i - starts[first_block_of[t]] // 128 + 1 for i, t in enumerate(block_first_token)])


def test_tile_ranges_with_a_window_and_padding():
    seg = jnp.asarray(np.repeat([[1, 2, 0]], [64, 32, 32], axis=1))
    r = tile_ranges(seg, 32, 32, sliding_window=40)
    # query block 1 (tokens 32..63): segment 1 starts at 0, window reaches back to token 32 - 39 < 0
    assert r.kv_lo.tolist() == [[0, 0, 2, 3]] and r.kv_hi.tolist() == [[1, 2, 3, 4]]
    # key block 0 (tokens 0..31) is seen by queries up to min(63, 31 + 39 = 70) -> block 1
    assert r.q_lo.tolist() == [[0, 1, 2, 3]] and r.q_hi.tolist() == [[2, 2, 3, 4]]


def test_lowers_to_triton_for_cuda_on_cpu():
    """The three kernels of a bf16 fwd+bwd lower to Triton calls for CUDA (checked without a GPU)."""
    from jax import export

    q = jax.ShapeDtypeStruct((2, 1024, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 1024, 2, 128), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, 1024), jnp.int32)
    blocks = pallas_gpu.HOPPER[128]

    def loss(q, k, v, s):
        return pallas_attention(q, k, v, s, scale=128**-0.5, block_sizes=blocks).astype(jnp.float32).sum()

    triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = export.export(jax.jit(jax.grad(loss, (0, 1, 2))), platforms=["cuda"], disabled_checks=[triton])
    text = exported(q, kv, kv, seg).mlir_module()
    assert text.count("__gpu$xla.gpu.triton") == 3
    for name in ("segment_flash_forward", "segment_flash_dkdv", "segment_flash_dq"):
        assert name in text


def test_dispatcher_rules():
    def pick(requested, platform, dtype=jnp.bfloat16, head_dim=128, **kw):
        return select_attention_backend(
            requested, platform, dtype=dtype, head_dim=head_dim, has_segments=True, **kw
        )

    on_cpu = pick("pallas_gpu", "cpu", dtype=jnp.float32, head_dim=64)
    assert on_cpu.name == "pallas_gpu" and "interpret" in on_cpu.reason
    assert on_cpu.fn.keywords["interpret"] is True
    assert pick("auto", "cpu").name == "xla"  # interpret mode is never an automatic choice
    assert pick("pallas_gpu", "gpu").fn.keywords["interpret"] is False
    with pytest.raises(ValueError, match="'pallas_gpu' cannot run here: .*bfloat16 or float16"):
        pick("pallas_gpu", "gpu", dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"head_dim \(64, 128\) \(got 96\)"):
        pick("pallas_gpu", "gpu", head_dim=96)
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        pick("pallas_gpu", "tpu")
