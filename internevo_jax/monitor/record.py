"""The step record's key order: the one place that says which metrics come first, and in which order."""

from __future__ import annotations

from collections.abc import Mapping

TGS_KEY = "tgs (tokens/gpu/second)"  # InternEvo's name of tokens per device per second

# InternEvo's keys, in InternEvo's order; users' log parsers depend on both.
LINE_KEYS = (
    "tflops",
    "step",
    "loss",
    TGS_KEY,
    "lr",
    "loss_scale",
    "grad_norm",
    "micro_num",
    "num_consumed_tokens",
    "inf_nan_skip_batches",
    "num_samples_in_batch",
    "largest_length",
    "largest_batch",
    "smallest_batch",
    "adam_beta2",
    "fwd_bwd_time",
)

# Ours, right after InternEvo's; every other metric follows in the order it was added to the record.
RECORD_KEYS = (*LINE_KEYS, "acc", "perplexity", "mfu")


# Keys only some runs have, and the key InternEvo prints each one after: a mixture-of-experts
# model's auxiliary loss ("loss" is then the cross-entropy alone).
OPTIONAL_KEYS = {"moe_loss": "grad_norm"}
_ORDER = tuple(
    name for key in RECORD_KEYS for name in (key, *(k for k, after in OPTIONAL_KEYS.items() if after == key))
)


def ordered(record: Mapping[str, object]) -> dict[str, object]:
    """`record` with RECORD_KEYS (and OPTIONAL_KEYS in their places) first in their order, then
    the other keys as given."""
    known = set(_ORDER)
    return {
        **{k: record[k] for k in _ORDER if k in record},
        **{k: v for k, v in record.items() if k not in known},
    }
