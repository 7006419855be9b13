"""Loss reduction and metric formulas against NumPy references."""

import numpy as np
import pytest

from internevo_jax.monitor import LINE_KEYS, format_metrics_line
from internevo_jax.trainer import cross_entropy
from internevo_jax.trainer.loss import token_stats
from internevo_jax.trainer.metrics import batch_statistics, peak_flops_for


def numpy_loss(logits, labels, eps):
    logits = logits.astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    rows = []
    for r in range(labels.shape[0]):
        terms = []
        for t in range(labels.shape[1]):
            y = labels[r, t]
            if y == -100:
                continue
            nll = logz[r, t] - logits[r, t, y]
            smooth = logz[r, t] - logits[r, t].mean()
            terms.append((1 - eps) * nll + eps * smooth)
        rows.append(np.mean(terms) if terms else 0.0)
    return float(np.mean(rows))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_is_mean_of_row_token_means(eps):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 9, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(3, 9)).astype(np.int32)
    labels[0, :4] = -100
    labels[1, :] = -100  # a row with no valid label contributes 0, never NaN
    labels[2, -1] = -100
    loss = cross_entropy(logits, labels, label_smoothing=eps)
    stats = token_stats(logits, labels)
    assert float(loss) == pytest.approx(numpy_loss(logits, labels, eps), rel=1e-5)
    assert float(stats["tokens"]) == (labels != -100).sum()
    correct = ((logits.argmax(-1) == labels) & (labels != -100)).sum()
    assert float(stats["correct"]) == correct


def test_token_stats_per_type():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 7)).astype(np.int32)
    labels[0, 0] = -100
    types = rng.integers(0, 3, size=(2, 7)).astype(np.int32)
    stats = token_stats(logits, labels, types, num_types=3)
    valid = labels != -100
    logz = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    nll = logz - np.take_along_axis(logits, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    for t in range(3):
        sel = valid & (types == t)
        assert float(stats["type_tokens"][t]) == sel.sum()
        assert float(stats["type_correct"][t]) == ((logits.argmax(-1) == labels) & sel).sum()
        assert float(stats["type_nll"][t]) == pytest.approx(nll[sel].sum(), rel=1e-5)


def test_batch_statistics_counts_segments_per_micro_batch():
    seg = np.array(
        [
            [1, 1, 1, 2, 2, 3, 0, 0],  # 3 segments, longest 3
            [1, 1, 1, 1, 1, 1, 2, 2],  # 2 segments, longest 6
        ]
    )
    stats = batch_statistics(seg)
    assert stats == {"num_samples_in_batch": 5, "largest_length": 6, "largest_batch": 3, "smallest_batch": 2}


def test_metrics_line_keeps_internevo_order_then_extras():
    record = {k: 1 for k in reversed(LINE_KEYS)}
    record["mfu"] = 0.5
    line = format_metrics_line(record)
    keys = [part.split("=")[0] for part in line.split(",")]
    assert keys == list(LINE_KEYS) + ["mfu"]
    assert line.startswith("tflops=1,step=1,loss=1,tgs (tokens/gpu/second)=1,lr=1")


def test_moe_metrics_line_puts_moe_loss_after_grad_norm_and_leaves_lists_to_jsonl():
    """InternEvo prints an MoE model's moe_loss after grad_norm; per-layer lists stay off the line."""
    record = {k: 1 for k in reversed(LINE_KEYS)}
    record.update(moe_load=[[0.5, 0.5]], moe_dropped=[0.0], moe_loss=0.25)
    keys = [part.split("=")[0] for part in format_metrics_line(record).split(",")]
    at = keys.index("grad_norm")
    assert keys[at + 1] == "moe_loss" and keys[at + 2] == "micro_num"
    assert "moe_load" not in keys and "moe_dropped" not in keys


def test_peak_flops_table():
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for("TPU v5 lite") == 197e12
    assert peak_flops_for("TPU v5p") == 459e12
    assert peak_flops_for("cpu") is None
