"""The chaos soak reuses the checkpoint tests' helpers (tests/checkpoint/ckpt_helpers.py)."""

from __future__ import annotations

import os
import sys

_CHECKPOINT_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoint")
if _CHECKPOINT_TESTS not in sys.path:
    sys.path.insert(0, _CHECKPOINT_TESTS)
