"""Fixtures for the data tests."""

from __future__ import annotations

import pytest
from data_helpers import internlm_tokenizer_path


@pytest.fixture
def internlm_tokenizer():
    return internlm_tokenizer_path()
