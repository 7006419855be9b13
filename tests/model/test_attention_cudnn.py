"""The cuDNN backend's packed-row routes: segment tables, the version / signature guard and its
fallback, the plumbing around the private call, and its lowering for CUDA (no GPU here)."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from internevo_jax.model.attention import cudnn, select_attention_backend, xla_attention

fa = cudnn.private_api()
CUSTOM_CALLS = [
    "__cudnn$fmhaSoftmax",
    "__cudnn$fmhaSoftmaxBackward",
    "__cudnn$fmhaScaleBiasSoftmax",
    "__cudnn$fmhaScaleBiasSoftmaxBackward",
]


def _clear_caches():
    for fn in (cudnn.segment_route, cudnn.kv_offsets_follow_kv_heads, cudnn.log_once):
        fn.cache_clear()


@pytest.fixture(autouse=True)
def fresh_probes():
    # The probes are once per process; each test sets up its own jax.
    _clear_caches()
    yield
    _clear_caches()


def reference_tables(segment_ids: np.ndarray, max_segments: int):
    """NumPy: per row, the runs of equal ids as (start, length), padded with -1."""
    b, _ = segment_ids.shape
    offsets = np.full((b, max_segments + 1), -1, np.int32)
    lengths = np.full((b, max_segments), -1, np.int32)
    runs = np.zeros(b, np.int32)
    for r, row in enumerate(segment_ids):
        starts = [0] + [t for t in range(1, len(row)) if row[t] != row[t - 1]]
        ends = starts[1:] + [len(row)]
        runs[r] = len(starts)
        for j, (s, e) in enumerate(zip(starts[:max_segments], ends[:max_segments])):
            offsets[r, j], lengths[r, j] = s, e - s
    return offsets, lengths, runs


LAYOUTS = {
    "one segment": [[3] * 12],
    "segments then padding": [[1] * 5 + [2] * 4 + [0] * 3],
    "length-1 segments": [[1, 2, 3, 3, 4, 5, 5, 5, 6, 7, 8, 9]],
    "only padding": [[0] * 12],
    "padding between windows": [[1] * 4 + [0] * 2 + [2] * 3 + [0] * 3],
    "every token its own run": [list(range(1, 13))],
    "mixed rows": [[1] * 6 + [2] * 6, [1] + [2] * 10 + [0], [5] * 11 + [6]],
}


@pytest.mark.parametrize("max_segments", [1, 3, 12])
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_segment_tables_match_numpy(layout, max_segments):
    ids = np.asarray(LAYOUTS[layout], np.int32)
    got = jax.jit(cudnn.segment_tables, static_argnums=1)(jnp.asarray(ids), max_segments)
    for ours, ref, name in zip(got, reference_tables(ids, max_segments), ("offsets", "lengths", "runs")):
        np.testing.assert_array_equal(np.asarray(ours), ref, err_msg=name)


def test_segment_tables_of_random_packs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 9, size=12)
        row = np.repeat(np.arange(1, 13), lengths)[:40]
        row = np.pad(row, (0, 40 - len(row)))  # trailing padding where the samples ran out
        ids = np.stack([row, row[::-1]]).astype(np.int32)
        for m in (4, 40):
            got = cudnn.segment_tables(jnp.asarray(ids), m)
            for ours, ref in zip(got, reference_tables(ids, m)):
                np.testing.assert_array_equal(np.asarray(ours), ref)


def ragged_reference(q, k, v, offsets, lengths, *, scale, sliding_window=None):
    """What cuDNN computes from the tables: each listed segment a causal sequence of its own;
    tokens outside every segment are left at 0 (cuDNN leaves them unwritten)."""
    t = q.shape[1]
    pos = jnp.arange(t)
    starts, sizes = offsets[:, :-1, None], lengths[:, :, None]
    member = (pos >= starts) & (pos < starts + sizes) & (sizes > 0)  # [B, M, T]
    slot = jnp.where(member.any(1), jnp.argmax(member, axis=1), -1)  # [B, T]
    groups = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    visible = (
        (slot[:, :, None] == slot[:, None, :]) & (slot[:, :, None] >= 0) & (pos[None, :] <= pos[:, None])
    )
    if sliding_window is not None:
        visible &= pos[:, None] - pos[None, :] < sliding_window
    scores = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32) * scale
    scores = jnp.where(visible[:, None], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhts,bshd->bthd", probs, v.astype(jnp.float32))
    return jnp.where((slot >= 0)[:, :, None, None], out, 0).astype(q.dtype)


def _qkv(rng, b, t, hq, hkv, d=8):
    q = jnp.asarray(rng.normal(size=(b, t, hq, d)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, t, hkv, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, t, hkv, d)), jnp.float32)
    return q, k, v


@pytest.mark.parametrize("window", [None, 3])
def test_tables_mean_the_segment_mask(window):
    """Attention over the tables' segments equals the segment-masked reference on every token
    whose padding is one trailing run (what packing produces)."""
    rng = np.random.default_rng(1)
    ids = np.array([[1] * 5 + [2] + [3] * 7 + [0] * 3, [4] * 16, list(range(1, 9)) + [9] * 8], np.int32)
    q, k, v = _qkv(rng, 3, 16, 4, 2)
    offsets, lengths, _ = cudnn.segment_tables(jnp.asarray(ids), 16)
    ours = ragged_reference(q, k, v, offsets, lengths, scale=0.3, sliding_window=window)
    ref = xla_attention(q, k, v, jnp.asarray(ids), scale=0.3, sliding_window=window)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.fixture
def stand_ins(monkeypatch):
    """The private call replaced by `ragged_reference` and the dense mask run by jax's XLA
    implementation, so that the plumbing around them runs on CPU. Records which ran."""
    ran = []

    def fast(q, k, v, offsets, lengths, *, scale, sliding_window):
        ran.append(("segments", k.shape[2], offsets.shape[1] - 1))
        return ragged_reference(q, k, v, offsets, lengths, scale=scale, sliding_window=sliding_window)

    original = cudnn.dpa_attention

    def dense(*args, **kwargs):
        ran.append(("dense",))
        return original(*args, **kwargs, implementation="xla")

    monkeypatch.setattr(cudnn, "cudnn_segment_call", fast)
    monkeypatch.setattr(cudnn, "dpa_attention", dense)
    return ran


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_segment_attention_takes_the_tables_when_they_fit(stand_ins, kv_heads):
    rng = np.random.default_rng(2)
    t = 2 * cudnn.MAX_SEGMENTS
    ids = np.repeat(np.arange(1, 9), t // 8)[None].repeat(2, 0).astype(np.int32)
    q, k, v = _qkv(rng, 2, t, 4, kv_heads)
    out = jax.jit(functools.partial(cudnn.segment_attention, scale=0.3))(q, k, v, jnp.asarray(ids))
    np.testing.assert_allclose(out, xla_attention(q, k, v, jnp.asarray(ids), scale=0.3), rtol=1e-5, atol=1e-5)
    if not cudnn.kv_offsets_follow_kv_heads():  # jax <= 0.11.0: k and v reach it with the query's 4 heads
        assert ("segments", 4, cudnn.MAX_SEGMENTS) in stand_ins
    # the cond traces both branches; which one runs is checked on the values in the next test


def test_segment_attention_rows_over_the_cap_take_the_dense_mask(stand_ins, monkeypatch):
    rng = np.random.default_rng(3)
    t = 16
    monkeypatch.setattr(cudnn, "MAX_SEGMENTS", 4)
    q, k, v = _qkv(rng, 2, t, 4, 4)
    few = np.repeat(np.arange(1, 5), 4)[None].repeat(2, 0).astype(np.int32)  # 4 runs: fits
    many = few.copy()
    many[1] = np.repeat(np.arange(1, 9), 2)  # one row of 8 runs: the whole call goes dense
    run = jax.jit(functools.partial(cudnn.segment_attention, scale=0.3))
    for ids in (few, many):
        out = run(q, k, v, jnp.asarray(ids))
        np.testing.assert_allclose(
            out, xla_attention(q, k, v, jnp.asarray(ids), scale=0.3), rtol=1e-5, atol=1e-5
        )
    # Which branch ran: poison the dense one and look at the values.
    monkeypatch.setattr(cudnn, "dpa_attention", lambda q, *a, **kw: jnp.full(q.shape, 7.0, q.dtype))
    run = jax.jit(functools.partial(cudnn.segment_attention, scale=0.3))
    assert not np.any(np.asarray(run(q, k, v, jnp.asarray(few))) == 7.0)
    assert np.all(np.asarray(run(q, k, v, jnp.asarray(many))) == 7.0)


def test_unpacked_rows_take_the_builtin_causal_path(stand_ins):
    q, k, v = _qkv(np.random.default_rng(4), 1, 8, 2, 2)
    cudnn.segment_attention(q, k, v, None, scale=0.3)
    assert stand_ins == [("dense",)]


# -- the guard ------------------------------------------------------------------------------------


def _query(**kw):
    kw.setdefault("head_dim", 128)
    kw.setdefault("has_segments", True)
    return select_attention_backend("auto", "gpu", dtype=jnp.bfloat16, **kw)


def test_route_available_with_this_jax():
    ok, why = cudnn.segment_route()
    assert ok, why
    assert f"jax {jax.__version__}" in why
    choice = _query(seq_len=4096)
    assert choice.name == "cudnn" and "segment offsets" in choice.reason
    assert choice.fn is cudnn.segment_attention
    assert _query(has_segments=False).fn is cudnn.dpa_attention


@pytest.mark.parametrize("version", ["0.5.3", "0.6.2", "0.13.0", "1.0.0"])
def test_versions_outside_the_checked_range_fall_back_to_the_dense_mask(monkeypatch, package_log, version):
    monkeypatch.setattr(jax, "__version__", version)
    ok, why = cudnn.segment_route()
    assert not ok and f"jax {version} is outside the versions" in why
    # auto declines packed rows (a segment-aware backend further down takes them) ...
    auto = _query(seq_len=4096)
    assert auto.name != "cudnn" and "segment-offset route is unavailable" in auto.reason
    assert _query(has_segments=False).name == "cudnn"  # ... but unpacked rows stay on cuDNN
    # explicit cudnn still runs packed rows, with the dense mask, and says which route runs
    explicit = select_attention_backend("cudnn", "gpu", dtype=jnp.bfloat16, head_dim=128, has_segments=True)
    assert explicit.fn is cudnn.dpa_attention
    assert "dense [B, 1, T, T] mask" in explicit.reason and version in explicit.reason
    select_attention_backend("cudnn", "gpu", dtype=jnp.bfloat16, head_dim=128, has_segments=True)
    lines = [r.getMessage() for r in package_log.records if "cuDNN attention" in r.getMessage()]
    assert lines == [f"cuDNN attention: packed rows use the dense [B, 1, T, T] mask because {why}"]


def test_missing_private_function_falls_back(monkeypatch):
    monkeypatch.delattr(fa, "dot_product_attention")
    ok, why = cudnn.segment_route()
    assert not ok and "has no jax._src.cudnn.fused_attention_stablehlo.dot_product_attention" in why
    assert _query().name != "cudnn"


def test_moved_module_falls_back(monkeypatch):
    monkeypatch.setattr(cudnn, "PRIVATE_MODULE", "jax._src.cudnn.moved_somewhere")
    ok, why = cudnn.segment_route()
    assert not ok and "moved_somewhere" in why


def test_changed_signature_falls_back(monkeypatch):
    def old_signature(query, key, value, bias=None, mask=None, q_seqlen=None, kv_seqlen=None, *, scale=1.0):
        raise AssertionError("never called")

    monkeypatch.setattr(fa, "dot_product_attention", old_signature)
    ok, why = cudnn.segment_route()
    assert not ok and "lacks ['q_offsets', 'kv_offsets', 'mask_type', 'qkv_layout']" in why


def test_a_route_without_windows_keeps_windows_on_the_dense_mask(monkeypatch):
    real = fa.dot_product_attention

    def no_window(
        query,
        key,
        value,
        bias=None,
        mask=None,
        q_seqlen=None,
        kv_seqlen=None,
        q_offsets=None,
        kv_offsets=None,
        *,
        scale=1.0,
        mask_type=None,
        qkv_layout="BTNH",
    ):
        return real(
            query,
            key,
            value,
            bias,
            mask,
            q_seqlen,
            kv_seqlen,
            q_offsets,
            kv_offsets,
            scale=scale,
            mask_type=mask_type,
            qkv_layout=qkv_layout,
        )

    monkeypatch.setattr(fa, "dot_product_attention", no_window)
    assert cudnn.segment_route()[0]
    ok, why = cudnn.segment_route(sliding_window=True)
    assert not ok and "sliding_window_length" in why
    windowed = select_attention_backend(
        "cudnn", "gpu", dtype=jnp.bfloat16, head_dim=128, has_segments=True, sliding_window=64
    )
    assert windowed.fn is cudnn.dpa_attention and "dense" in windowed.reason


def test_pre_hopper_gpus_fall_back(monkeypatch):
    monkeypatch.setattr(cudnn, "_gpu_capability", lambda: (8, 0))
    ok, why = cudnn.segment_route()
    assert not ok and "compute capability 8.0 < 9.0" in why


def test_kv_offset_stride_probe(monkeypatch):
    # Up to jax 0.11.0 key offsets are strided by the query heads; a fixed helper uses the key's own.
    if cudnn._version(jax.__version__) <= (0, 11, 0):
        assert not cudnn.kv_offsets_follow_kv_heads()
    original = fa._fix_seqlen_offsets

    def fixed(q_seqlen, kv_seqlen, q_offsets, kv_offsets, query, key):
        q_parts = original(q_seqlen, kv_seqlen, q_offsets, kv_offsets, query, key)
        like_key = jnp.zeros(query.shape[:2] + key.shape[2:], query.dtype)
        return (*q_parts[:3], original(q_seqlen, kv_seqlen, q_offsets, kv_offsets, like_key, key)[3])

    monkeypatch.setattr(fa, "_fix_seqlen_offsets", fixed)
    cudnn.kv_offsets_follow_kv_heads.cache_clear()
    assert cudnn.kv_offsets_follow_kv_heads()
    monkeypatch.delattr(fa, "_fix_seqlen_offsets")
    cudnn.kv_offsets_follow_kv_heads.cache_clear()
    assert not cudnn.kv_offsets_follow_kv_heads()  # unknown: repeat k and v (always correct)


# -- lowering for CUDA on this CPU machine --------------------------------------------------------


def _export(fn, *shapes):
    args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
    checks = [export.DisabledSafetyCheck.custom_call(n) for n in CUSTOM_CALLS]
    return export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=checks)(*args).mlir_module()


def _packed_shapes(t, hq=4, hkv=2, d=64):
    """q, k, v and segment ids of 2 packed rows of t tokens."""
    kv = ((2, t, hkv, d), jnp.bfloat16)
    return ((2, t, hq, d), jnp.bfloat16), kv, kv, ((2, t), jnp.int32)


@pytest.mark.skipif(
    jax.default_backend() == "gpu",
    reason="checks that lowering fails without a GPU; on a GPU host jax answers the cuDNN version query",
)
def test_the_private_call_needs_a_cudnn_query_to_lower():
    # Without a GPU jax cannot ask for the cuDNN version, so the call cannot be traced as it is.
    with pytest.raises(RuntimeError, match="cuDNN is not detected"):
        _export(functools.partial(cudnn.segment_attention, scale=0.125), *_packed_shapes(128))


@pytest.fixture
def as_on_hopper(monkeypatch):
    """jax's two device queries answered as on an H100 with cuDNN 9.19 (all else is real)."""
    monkeypatch.setattr(fa, "check_cudnn_version", lambda: 91900)
    monkeypatch.setattr(fa, "check_compute_capability", lambda capability: True)


def _config(text, key):
    """The values of `key` in the exported backend configs (JSON escaped in the MLIR text)."""
    return re.findall(rf"{key}\\22: (?:\\22)?(\w+)", text)


@pytest.mark.parametrize("window", [None, 32])
def test_segment_route_lowers_for_cuda_forward_and_backward(as_on_hopper, window):
    t = 2 * cudnn.MAX_SEGMENTS
    attend = functools.partial(cudnn.segment_attention, scale=0.125, sliding_window=window)

    def loss(q, k, v, ids):
        return attend(q, k, v, ids).astype(jnp.float32).sum()

    forward = _export(attend, *_packed_shapes(t))
    backward = _export(jax.grad(loss, argnums=(0, 1, 2)), *_packed_shapes(t))
    for text in (forward, backward):
        assert "__cudnn$fmhaSoftmax" in text  # the segment route
        assert "__cudnn$fmhaScaleBiasSoftmax" in text  # the dense mask of rows over the cap
        assert str(cudnn.MAX_SEGMENTS) in _config(text, "max_seg_per_batch")
        assert "PADDING_CAUSAL" in _config(text, "mask_type")
        assert str(window or 0) in _config(text, "sliding_window_length")
    assert "__cudnn$fmhaSoftmaxBackward" in backward


def test_short_rows_lower_without_the_cond(as_on_hopper):
    text = _export(functools.partial(cudnn.segment_attention, scale=0.125), *_packed_shapes(48))
    assert "__cudnn$fmhaScaleBiasSoftmax" not in text  # 48 tokens never hold more than 48 runs
    assert _config(text, "max_seg_per_batch") == ["48"]


def test_segment_route_does_not_batch_under_vmap(as_on_hopper):
    # jax's batching rule for the cuDNN primitive folds neither offsets nor lengths (module docstring).
    shapes = [((3, *s), d) for s, d in _packed_shapes(48)]
    with pytest.raises(TypeError, match="reshape"):
        _export(jax.vmap(functools.partial(cudnn.segment_attention, scale=0.125)), *shapes)
