"""Fixtures for the checkpoint tests."""

from __future__ import annotations

import os

import pytest
from ckpt_helpers import S3_ENV, moto_server


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory):
    """A persistent compilation cache shared by the CLI runs of one test session."""
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(monkeypatch, s3_endpoint):
    """Environment pointing boto3 at the moto server, as a user would set it."""
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    return dict(os.environ)
