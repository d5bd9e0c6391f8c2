"""CSR sparse x dense product: ``out[r] = sum_{e in row r} values[e] * dense[indices[e]]``.

The fused Gather of every message-passing layer (GCN's ``A @ H``, GAT's attention-weighted sum,
SAGE's mean) is this product, so its CPU speed decides how we compare with PyG. Three pieces:

* :func:`csr_matmul_reference`: plain jax.numpy (row ids from the pointers, gather, segment_sum).
  Obviously correct; the tests' reference and the backward pass.
* the native CPU kernel ``csr_matmul.cc`` (built on first use by :mod:`frugal.jaxlib_ext.native`, called
  through ``jax.ffi``): rows accumulated in vector registers, split over XLA's intra-op threads.
  About 2-3x faster than jaxlib's CSR kernel on citation graphs at width 16, and it needs no
  column padding (jaxlib's kernel vectorizes only at widths that are multiples of 8).
* the XLA path: ``jax.experimental.sparse.BCSR`` (cuSPARSE on GPU, jaxlib's kernel on CPU), used
  off CPU, for dtypes other than float32, and on CPU when the native kernel is unavailable.

:func:`csr_matmul` picks one (``impl="auto"``: the native kernel for the CPU lowering, XLA for
every other platform, chosen per platform at lowering time, so one jitted or exported function
serves both) and is differentiable in ``values`` and ``dense`` (a custom VJP: the transpose
product as an index scatter, so the backward needs no transposed CSR).

A CPU program exported with ``jax.export`` that contains the native call needs the target
registered where it is deserialized: call :func:`native_available` there first.

Conventions shared by every path: ``indptr`` is (rows + 1,) non-decreasing from 0 and
``indptr[-1] <= len(indices)``; entries past ``indptr[-1]`` are unused (static-size padding); an
entry whose column index is outside ``[0, dense.shape[0])`` is skipped. Graphs padded for jit rely
on both. A concrete ``indptr`` that breaks the first rule is refused with the same ValueError on every
path. Under jit its values are unknown at trace time: the native kernel then fails at run time with
its own error, and the XLA and reference paths read it clamped into range (never out of bounds).
NaN and inf in ``values`` or in the dense rows an entry reads propagate to that entry's output row
only, on every path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from frugal.jaxlib_ext import native

IMPLS = ("auto", "native", "xla", "reference")
_TARGET = "frugal_csr_matmul"
_registered = False


def native_available() -> bool:
    """True when the native CPU kernel is built and registered with XLA."""
    global _registered
    if not _registered:
        library = native.load("csr_matmul")
        if library is None:
            return False
        jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.FrugalCsrMatmul), platform="cpu")
        _registered = True
    return True


def _row_ids(indptr: jax.Array, stored: int) -> jax.Array:
    """Row of each stored entry; entries past indptr[-1] get rows (out of range)."""
    return jnp.searchsorted(indptr, jnp.arange(stored, dtype=indptr.dtype), side="right").astype(jnp.int32) - 1


def _valid(indptr, indices, dense_rows):
    rows = _row_ids(indptr, indices.shape[0])
    num_rows = indptr.shape[0] - 1
    valid = (rows < num_rows) & (indices >= 0) & (indices < dense_rows)
    return rows, valid


def csr_matmul_reference(
    indptr: jax.Array, indices: jax.Array, values: jax.Array | None, dense: jax.Array
) -> jax.Array:
    """The product in plain jax.numpy: gather the referenced dense rows, sum them per CSR row."""
    num_rows = indptr.shape[0] - 1
    rows, valid = _valid(indptr, indices, dense.shape[0])
    weight = valid.astype(dense.dtype) if values is None else jnp.where(valid, values, 0).astype(dense.dtype)
    gathered = dense[jnp.clip(indices, 0, dense.shape[0] - 1)] * weight[:, None]
    return jax.ops.segment_sum(gathered, jnp.where(valid, rows, num_rows), num_segments=num_rows)


# jaxlib's CPU CSR kernel (Eigen) vectorizes a row update only when the dense width is a multiple
# of the 8-float AVX packet: measured on PubMed-size (108k nonzeros) 2.3 ms at width 7 but 0.6 ms
# at width 8. The XLA path pads its columns to this multiple and cuts them off again.
_COLUMN_MULTIPLE = 8


def _xla_product(indptr, indices, values, dense):
    num_rows, width = indptr.shape[0] - 1, dense.shape[1]
    # jaxlib's kernel reads entries up to indptr[-1] without bounds checks (a pointer past the stored
    # entries crashes the process), so pointers are clamped into a valid, non-decreasing range.
    indptr = jnp.clip(jax.lax.cummax(indptr, axis=0), 0, indices.shape[0])
    # Entries past indptr[-1] are never read by a CSR product, so only the column range needs a
    # mask here (no per-entry row search on the forward path).
    valid = (indices >= 0) & (indices < dense.shape[0])
    # 16-bit floats are multiplied in float32: jax's sparse product has no bf16/f16 lowering (on GPU it
    # falls back to a generic path, 11x slower than float32 on an H200; on CPU to a dense fallback),
    # and float32 accumulation keeps the row sums accurate. The result is rounded once at the end.
    out_dtype = dense.dtype
    compute = jnp.float32 if jnp.issubdtype(out_dtype, jnp.floating) and jnp.finfo(out_dtype).bits < 32 else out_dtype
    ones = jnp.ones(indices.shape, compute)
    data = jnp.where(valid, ones if values is None else values.astype(compute), 0)
    matrix = sparse.BCSR(
        (data, jnp.clip(indices, 0, dense.shape[0] - 1), indptr), shape=(num_rows, dense.shape[0]), indices_sorted=True
    )
    padded = -(-width // _COLUMN_MULTIPLE) * _COLUMN_MULTIPLE
    dense = dense.astype(compute)
    if padded != width:
        dense = jnp.pad(dense, ((0, 0), (0, padded - width)))
    return (matrix @ dense)[:, :width].astype(out_dtype)


def _native_product(indptr, indices, values, dense):
    unit = values is None
    call = jax.ffi.ffi_call(
        _TARGET, jax.ShapeDtypeStruct((indptr.shape[0] - 1, dense.shape[1]), jnp.float32), vmap_method="sequential"
    )
    return call(
        indptr.astype(jnp.int32),
        indices.astype(jnp.int32),
        jnp.zeros((1,), jnp.float32) if unit else values,
        dense,
        unit_values=unit,
    )


def _forward(indptr, indices, values, dense, impl):
    if impl == "reference":
        return csr_matmul_reference(indptr, indices, values, dense)
    if impl == "xla":
        return _xla_product(indptr, indices, values, dense)
    if impl == "native":
        return _native_product(indptr, indices, values, dense)
    # auto: the lowering for CPU takes the native kernel, any other platform the XLA path.
    return jax.lax.platform_dependent(indptr, indices, values, dense, cpu=_native_product, default=_xla_product)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _product(indptr, indices, values, dense, impl):
    return _forward(indptr, indices, values, dense, impl)


def _product_fwd(indptr, indices, values, dense, impl):
    return _forward(indptr, indices, values, dense, impl), (indptr, indices, values, dense)


def _product_bwd(impl, residuals, cotangent):
    # d dense = A^T g as a scatter over the stored entries; d values[e] = <g[row e], dense[col e]>.
    indptr, indices, values, dense = residuals
    num_rows, dense_rows = indptr.shape[0] - 1, dense.shape[0]
    rows, valid = _valid(indptr, indices, dense_rows)
    g_rows = cotangent[jnp.clip(rows, 0, num_rows - 1)]
    columns = jnp.clip(indices, 0, dense_rows - 1)
    weight = valid.astype(dense.dtype) if values is None else jnp.where(valid, values, 0).astype(dense.dtype)
    d_dense = jax.ops.segment_sum(
        g_rows * weight[:, None], jnp.where(valid, columns, dense_rows), num_segments=dense_rows
    )
    d_values = None
    if values is not None:
        d_values = jnp.where(valid, jnp.sum(g_rows * dense[columns], axis=-1), 0).astype(values.dtype)
    return None, None, d_values, d_dense.astype(dense.dtype)


_product.defvjp(_product_fwd, _product_bwd)


def _check(indptr, indices, values, dense):
    if indptr.ndim != 1 or indptr.shape[0] < 1 or not jnp.issubdtype(indptr.dtype, jnp.integer):
        raise ValueError(f"indptr must be a 1-D integer array of rows + 1 pointers; got {indptr.dtype}{indptr.shape}")
    if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"indices must be a 1-D integer array; got {indices.dtype}{indices.shape}")
    if dense.ndim != 2 or not jnp.issubdtype(dense.dtype, jnp.floating):
        raise ValueError(f"dense must be a 2-D float array (K, C); got {dense.dtype}{dense.shape}")
    if values is not None and (values.shape != indices.shape or not jnp.issubdtype(values.dtype, jnp.floating)):
        raise ValueError(
            f"values must be a float array shaped like indices {indices.shape}; "
            f"got {values.dtype}{values.shape} (or pass None for all ones)"
        )


def _check_pointers(indptr, stored: int) -> None:
    """Refuses a concrete indptr that is not non-decreasing from 0 within the stored entries."""
    if isinstance(indptr, jax.core.Tracer):
        return  # unknown until run time; see the module docstring
    host = np.asarray(indptr)
    if host[0] != 0:
        raise ValueError(f"indptr must start at 0, got indptr[0]={int(host[0])}")
    steps = np.diff(host)
    if np.any(steps < 0):
        row = int(np.argmax(steps < 0))
        raise ValueError(
            f"indptr must be non-decreasing, but indptr[{row + 1}]={int(host[row + 1])} "
            f"< indptr[{row}]={int(host[row])}"
        )
    if host[-1] > stored:
        raise ValueError(f"indptr[-1]={int(host[-1])} points past the {stored} stored entries of indices")


def csr_matmul(
    indptr: jax.Array, indices: jax.Array, values: jax.Array | None, dense: jax.Array, *, impl: str = "auto"
) -> jax.Array:
    """CSR (rows x K) times dense (K, C) -> (rows, C); ``values=None`` means every entry is 1.

    impl: "auto" (native kernel on CPU when it is available and the dtypes are float32, else the
    XLA path), "native" (CPU float32 only; errors if the kernel could not be built), "xla", or
    "reference". Differentiable in values and dense.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    indptr, indices, dense = jnp.asarray(indptr), jnp.asarray(indices), jnp.asarray(dense)
    values = None if values is None else jnp.asarray(values)
    _check(indptr, indices, values, dense)
    _check_pointers(indptr, indices.shape[0])
    float32 = dense.dtype == jnp.float32 and (values is None or values.dtype == jnp.float32)
    if impl == "native":
        if not float32:
            raise ValueError(
                f"impl='native' needs float32 dense and values; got {dense.dtype}"
                f"{'' if values is None else ' / ' + str(values.dtype)} (use impl='xla')"
            )
        if not native_available():
            raise RuntimeError(f"impl='native' is unavailable: {native.status('csr_matmul')}")
    if impl == "auto" and not (float32 and native_available()):
        impl = "xla"
    if indices.shape[0] == 0 or indptr.shape[0] == 1 or dense.shape[0] == 0:
        return jnp.zeros((indptr.shape[0] - 1, dense.shape[1]), dense.dtype)
    return _product(indptr, indices, values, dense, impl)
