"""Fixtures for the CLI tests."""

from __future__ import annotations

import pytest
from tool_helpers import internlm_tokenizer_path


@pytest.fixture
def internlm_tokenizer():
    return internlm_tokenizer_path()
