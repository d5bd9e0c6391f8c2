"""Test session set-up: 8 virtual CPU devices, so that sharding tests run on this machine.

This must happen before JAX initializes its backends, which is why it lives here (pytest imports
conftest before any test module).
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
