"""Session-wide test setup.

Eight fake CPU devices for mesh and sharding tests: XLA reads the flag once, when jax is first
imported, so it is set here before any test module imports jax. Tests that want one device pass
`devices=jax.devices()[:1]`.
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
