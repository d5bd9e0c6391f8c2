"""Test session set-up: 8 virtual CPU devices, so that sharding tests run on this machine.

This must happen before JAX initializes its backends, which is why it lives here (pytest imports
conftest before any test module).
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests draw the same examples on every run (Hypothesis seeds each test from a hash of the test
# function: https://hypothesis.readthedocs.io/en/latest/settings.html#hypothesis.settings.derandomize),
# so that a CI run is reproducible and its duration does not swing with the shapes drawn (each new shape
# compiles new kernels: a run's property tests took from 110 to 170 s of worker time here). Set
# FRUGAL_HYPOTHESIS_RANDOM=1 to explore fresh examples instead.
from hypothesis import settings

settings.register_profile("fixed", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile("random" if os.environ.get("FRUGAL_HYPOTHESIS_RANDOM") == "1" else "fixed")
