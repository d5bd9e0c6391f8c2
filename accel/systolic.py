"""Systolic-array compute cycles, folding and utilization, counted the way SCALE-Sim counts them.

A GEMM C[M, N] = A[M, K] @ B[K, N] is mapped onto an R x C array in one of three dataflows
(SCALE-Sim's `calc_spatio_temporal_params`, GEMM case):

    dataflow  rows hold (S_R)   columns hold (S_C)   streamed over time (T)
    "os"      M (output rows)   N (output columns)   K
    "ws"      K (weights)       N                    M
    "is"      K (inputs)        M                    N

The operand is cut into ceil(S_R / R) * ceil(S_C / C) folds that run back to back. Per fold,
SCALE-Sim's demand matrices last

    OS:     R + C + T - 2          (no prefill: operands stream in skewed, outputs drain)
    WS/IS:  2R + C + T - 2         (R cycles to preload the stationary operand first)

and its compute report counts the index of the last demand row, i.e. one cycle less than the
sum over folds. We reproduce that count exactly (the tests compare against numbers produced by
running SCALE-Sim 3.0 offline).

Every function takes Python ints or JAX arrays, so a batch of layers or design points is one
`jax.vmap`. `relaxed=True` replaces each integer ceiling by a straight-through ceiling (value of
the ceiling, gradient of the smooth quotient), so `jax.grad` with respect to continuous
array sizes is finite; reported numbers always use the exact path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

DATAFLOWS = ("os", "ws", "is")


def _check_dataflow(dataflow: str) -> None:
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow={dataflow!r}: use one of {DATAFLOWS}")


def _is_integer(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.integer)


def ceil_div(a: ArrayLike, b: ArrayLike, *, relaxed: bool = False) -> jax.Array:
    """ceil(a / b) for positive values; with relaxed=True the gradient is that of a / b."""
    q = jnp.asarray(a, jnp.float32) / jnp.asarray(b, jnp.float32)
    exact = jnp.ceil(q - 1e-6)  # guards against 6.0000005 from float division of integers
    if relaxed:
        return q + jax.lax.stop_gradient(exact - q)
    return exact


def operand_mapping(m: ArrayLike, n: ArrayLike, k: ArrayLike, dataflow: str):
    """Returns (S_R, S_C, T): what the array rows hold, what its columns hold, and the streamed length."""
    _check_dataflow(dataflow)
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    return k, m, n


def gemm_folds(m, n, k, *, rows, cols, dataflow: str, relaxed: bool = False) -> jax.Array:
    """Number of folds ceil(S_R / rows) * ceil(S_C / cols) a GEMM needs on a rows x cols array."""
    s_r, s_c, _ = operand_mapping(m, n, k, dataflow)
    return ceil_div(s_r, rows, relaxed=relaxed) * ceil_div(s_c, cols, relaxed=relaxed)


def fold_cycles(m, n, k, *, rows, cols, dataflow: str) -> jax.Array:
    """Cycles of one fold: R + C + T - 2 (OS) or 2R + C + T - 2 (WS, IS)."""
    _, _, t = operand_mapping(m, n, k, dataflow)
    rows = jnp.asarray(rows, jnp.float32)
    cols = jnp.asarray(cols, jnp.float32)
    prefill = 0.0 if dataflow == "os" else rows
    return prefill + rows + cols + jnp.asarray(t, jnp.float32) - 2.0


def gemm_compute_cycles(
    m: ArrayLike, n: ArrayLike, k: ArrayLike, *, rows: ArrayLike, cols: ArrayLike, dataflow: str, relaxed: bool = False
) -> jax.Array:
    """Compute cycles of an M x N x K GEMM on a rows x cols systolic array, as SCALE-Sim reports them.

    Args:
      m, n, k: GEMM sizes (ints or arrays; broadcast together).
      rows, cols: array height and width (ints or arrays, >= 1).
      dataflow: "os", "ws" or "is" (static).
      relaxed: straight-through ceilings so `jax.grad` w.r.t. rows/cols is finite.

    Returns:
      Cycles: folds * fold_cycles - 1 (SCALE-Sim's compute-report count). Integer inputs give an
      exact int32 result (float32 would round counts above 2**24); float inputs or relaxed=True
      give float32.
    """
    _check_dataflow(dataflow)
    if not relaxed and all(_is_integer(v) for v in (m, n, k, rows, cols)):
        s_r, s_c, t = (jnp.asarray(v, jnp.int32) for v in operand_mapping(m, n, k, dataflow))
        r, c = jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32)
        folds = ((s_r + r - 1) // r) * ((s_c + c - 1) // c)
        per_fold = r + c + t - 2 + (0 if dataflow == "os" else r)
        return folds * per_fold - 1
    folds = gemm_folds(m, n, k, rows=rows, cols=cols, dataflow=dataflow, relaxed=relaxed)
    return folds * fold_cycles(m, n, k, rows=rows, cols=cols, dataflow=dataflow) - 1.0


def mapping_efficiency(m, n, k, *, rows, cols, dataflow: str) -> jax.Array:
    """Average fraction of PEs holding an operand over all folds (SCALE-Sim's mapping efficiency)."""
    s_r, s_c, _ = operand_mapping(m, n, k, dataflow)
    folds = gemm_folds(m, n, k, rows=rows, cols=cols, dataflow=dataflow)
    return jnp.asarray(s_r, jnp.float32) * s_c / (folds * jnp.asarray(rows, jnp.float32) * cols)


def compute_utilization(m, n, k, *, rows, cols, dataflow: str) -> jax.Array:
    """MACs / (PEs * compute cycles): the fraction of PE-cycles doing useful work."""
    cycles = gemm_compute_cycles(m, n, k, rows=rows, cols=cols, dataflow=dataflow) + 1.0
    macs = jnp.asarray(m, jnp.float32) * n * k
    return macs / (jnp.asarray(rows, jnp.float32) * cols * cycles)


def precision_factor(bits: ArrayLike, *, pmax: ArrayLike, pmin: ArrayLike) -> jax.Array:
    """BitFusion-style throughput gain of one operand: floor(pmax / max(bits, pmin)), at least 1.

    A fused PE built from pmin-bit bricks handles one pmax-bit operand or pmax/bits narrower ones
    (BitFusion `Simulator.get_perf_factor`); operands wider than pmax are clamped to one pass.
    """
    bits = jnp.maximum(jnp.asarray(bits, jnp.float32), jnp.asarray(pmin, jnp.float32))
    return jnp.maximum(jnp.floor(jnp.asarray(pmax, jnp.float32) / bits), 1.0)


def scaled_gemm_cycles(
    m,
    n,
    k,
    *,
    rows,
    cols,
    a_bits,
    w_bits,
    pmax,
    pmin,
    dataflow: str,
    fill_drain: ArrayLike = 1.0,
    relaxed: bool = False,
) -> jax.Array:
    """Cycles of a GEMM on a precision-scalable array (BitFusion fusion units).

    The array behaves as a (rows * f_a) x (cols * f_w) array of narrow PEs, f = precision_factor.
    With fill_drain=1 each fold pays SCALE-Sim's fill/drain overhead on the physical array; with
    fill_drain=0 only the streamed length counts, which is how the BitFusion/ANT simulator charges
    a pipelined array (`get_compute_cycles_output_stationary`). fill_drain may be an array, so it
    can be swept or relaxed like any other design parameter.
    """
    f_a = precision_factor(a_bits, pmax=pmax, pmin=pmin)
    f_w = precision_factor(w_bits, pmax=pmax, pmin=pmin)
    _check_dataflow(dataflow)
    eff_rows = jnp.asarray(rows, jnp.float32) * f_a
    eff_cols = jnp.asarray(cols, jnp.float32) * f_w
    if dataflow == "os":
        # output rows (pixels x batch) on rows, output channels on columns, K streamed
        folds = ceil_div(m, eff_rows, relaxed=relaxed) * ceil_div(n, eff_cols, relaxed=relaxed)
        streamed = jnp.asarray(k, jnp.float32)
    else:
        # weights stationary: K on rows, N on columns, M streamed ("is" streams N instead)
        other = n if dataflow == "ws" else m
        folds = ceil_div(k, eff_rows, relaxed=relaxed) * ceil_div(other, eff_cols, relaxed=relaxed)
        streamed = jnp.asarray(m if dataflow == "ws" else n, jnp.float32)
    overhead = fold_cycles(0, 0, 0, rows=rows, cols=cols, dataflow=dataflow) * jnp.asarray(fill_drain, jnp.float32)
    return folds * (streamed + overhead)
