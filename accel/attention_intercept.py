"""Recognising hybrid (SALO) attention calls while tracing a workload.

While `frugal.accel.trace_workload` traces a function, `frugal.transforms.attention.hybrid_attention` (only when
that module can be imported) is swapped, in every loaded module that holds it as a global, for a
wrapper that records the call's pattern and shapes and runs it inside a jit named
HYBRID_ATTENTION_NAME. The tracer then turns each such named equation into one AttentionOp instead
of counting the attention's internals as plain GEMMs. The original function is restored afterwards.
This module imports nothing from the rest of the repository at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys

import jax

HYBRID_ATTENTION_NAME = "hybrid_attention"


@contextlib.contextmanager
def intercept_hybrid_attention(records: list):
    """Routes calls of frugal.transforms.attention.hybrid_attention through a named jit and records each
    call's pattern and shapes; a no-op when that module cannot be imported."""
    try:
        if importlib.util.find_spec("frugal.transforms.attention") is None:
            yield False
            return
        module = importlib.import_module("frugal.transforms.attention")
    except Exception:  # a broken or half-written sibling module must not break tracing
        yield False
        return
    original = getattr(module, "hybrid_attention", None)
    if not callable(original):
        yield False
        return

    def recording(q, k, v, pattern, **kwargs):
        records.append((pattern, tuple(q.shape)))

        def hybrid_attention(q, k, v):  # the jit takes this name in the jaxpr
            return original(q, k, v, pattern, **kwargs)

        return jax.jit(hybrid_attention)(q, k, v)

    patched = []
    for mod in list(sys.modules.values()):
        try:
            if getattr(mod, "hybrid_attention", None) is original:
                mod.hybrid_attention = recording
                patched.append(mod)
        except Exception:  # exotic modules with odd __getattr__
            continue
    try:
        yield True
    finally:
        for mod in patched:
            mod.hybrid_attention = original
