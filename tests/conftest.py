"""Session-wide test setup.

Eight fake CPU devices for mesh and sharding tests: XLA reads the flag once, when jax is first
imported, so it is set here before any test module imports jax. Tests that want one device pass
`devices=jax.devices()[:1]`.
"""

import logging
import os

import pytest

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()


@pytest.fixture
def package_log(caplog):
    """caplog listening on the package logger at INFO (which setup_logging may have set not to
    propagate); each record is seen once."""
    from internevo_jax.monitor import logger

    old = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caplog's root handler would see each record a second time
    yield caplog
    logger.setLevel(old[0])
    logger.propagate = old[1]
    logger.removeHandler(caplog.handler)
