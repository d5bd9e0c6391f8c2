"""Test session set-up: 8 virtual CPU devices, and one XLA compilation cache per run.

All must happen before JAX initializes (it reads its flags when it is imported), which is why they
live here: pytest imports conftest before any test module. Subprocesses the tests start inherit them
through the environment.

The compilation cache: many tests build a fresh model or a fresh `jax.jit` of the same function, and
the end-to-end tests start CLI subprocesses that compile the same training steps again, so the same
XLA programs are compiled many times per run. JAX's persistent compilation cache
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html) keyed by the program's HLO, the
flags and the JAX version, turns the repeats into a file read. The process that starts the run (the
xdist controller, or pytest itself without xdist) creates the folder and exports it through the
environment, so both xdist workers and every subprocess share it; it removes the folder when the
run ends, so every run starts cold and the measured test time is a fresh machine's. A size limit
switches on JAX's file lock, which keeps two processes from reading an entry another is writing.
An existing JAX_COMPILATION_CACHE_DIR (yours) is left alone.
"""

import os
import shutil
import tempfile

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MPLBACKEND", "Agg")

_OWN_CACHE_DIR: str | None = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE_DIR = tempfile.mkdtemp(prefix="frugal-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE_DIR
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(4 * 2**30)


def pytest_sessionfinish(session, exitstatus):
    """The run's creator removes the cache it made (workers and subprocesses only used it)."""
    if _OWN_CACHE_DIR is not None:
        shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)
