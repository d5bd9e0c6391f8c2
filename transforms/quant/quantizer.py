"""Fake quantization onto an ANT value grid, with a straight-through gradient and a trainable clip.

The reference (clevercool/ANT-Quantization, ``Quantizer._forward``) computes, with
``scale = alpha / max(grid)``::

    v = x / scale;  q = nearest_grid_value(v);  out = ((q - v).detach() + v) * scale

so the output is on the grid, ``d out / d x = 1`` everywhere (no clipping mask), and
``d out / d alpha = (q - v) / max(grid)``: an LSQ-like gradient that lets QAT train the clip value.
:func:`quantize` is that computation. We evaluate it on the grid normalized to max 1
(``v = x / alpha``), which is the same function with the same gradients.

Rounding is to the nearest grid value; an exact tie goes to the larger value, as the reference's
CUDA kernel (a linear scan keeping the last of equal distances over an ascending grid) resolves it.
Values beyond the grid's ends go to the end values (signed int reaches ``-8/7 * alpha`` at 4 bits,
like the reference).

``axis`` selects per-channel clip values (weights: one ``alpha`` per output channel); ``None`` means
one clip value for the whole tensor (activations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from frugal.transforms.quant.numerics import NumericType, encode, victimize

# The smallest clip value we divide by; a zero clip would make the scale 0 and the output NaN.
_MIN_ALPHA = 1e-30


def normalized_grid(ntype: NumericType) -> np.ndarray:
    """The type's distinct values divided by its clip value, float32: the largest value becomes
    exactly 1 (OliVe: the largest normal value; outliers lie beyond 1)."""
    return (ntype.grid / ntype.clip_value).astype(np.float32)


def nearest_grid_index(v: jax.Array, grid) -> jax.Array:
    """Index of the nearest value of a sorted `grid` for every element of `v` (ties: larger)."""
    grid = jnp.asarray(grid, dtype=v.dtype)
    midpoints = (grid[:-1] + grid[1:]) * 0.5
    # side="right" counts midpoints <= v, so a value exactly on a midpoint moves up.
    method = "compare_all" if grid.shape[-1] <= 32 else "scan"
    return jnp.searchsorted(midpoints, v, side="right", method=method)


def round_to_grid(v: jax.Array, grid) -> jax.Array:
    """Nearest value of a sorted `grid` for every element of `v`; ties go to the larger value.

    Not differentiable (callers wrap it in a straight-through estimator). `grid` may hold
    duplicates, which is how grids of different sizes are padded to a common length.
    """
    return jnp.asarray(grid, dtype=v.dtype)[nearest_grid_index(v, grid)]


def check_positive(value, name: str) -> None:
    """Refuses a concrete `value` with any entry <= 0 or not finite (the error names `name`).

    A traced value (a trainable clip value or scale under jit/grad) cannot be checked at trace time;
    the quantizers floor it at a tiny positive number instead (1e-30), so a collapsed clip value
    gives outputs near zero, never NaN or inf. Tests check both.
    """
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value, dtype=np.float64)
    if array.size and not (np.all(np.isfinite(array)) and np.all(array > 0)):
        bad = array[~(np.isfinite(array) & (array > 0))].ravel()[:3]
        raise ValueError(f"{name} must be finite and > 0 (it scales the grid), got {bad.tolist()}")


def _alpha_for(x: jax.Array, alpha, axis: int | None) -> jax.Array:
    """Broadcastable clip values: a scalar, or one per slice along `axis`."""
    check_positive(alpha, "alpha")
    # Rounding happens in at least float32: a bfloat16 grid could not hold 8-bit flint values.
    alpha = jnp.asarray(alpha, dtype=jnp.promote_types(x.dtype, jnp.float32))
    if axis is None:
        if alpha.size != 1:
            raise ValueError(f"alpha must be a scalar when axis is None (per-tensor), got shape {alpha.shape}")
        return alpha.reshape(())
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be in [{-x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis}")
    axis = axis % x.ndim
    channels = x.shape[axis]
    if alpha.ndim == x.ndim:  # already broadcastable (e.g. keepdims)
        return alpha
    if alpha.size == 1:
        return alpha.reshape(())
    if alpha.ndim == 1 and alpha.shape[0] == channels:
        shape = [1] * x.ndim
        shape[axis] = channels
        return alpha.reshape(shape)
    raise ValueError(
        f"alpha must be a scalar, shape ({channels},) or broadcastable to x {x.shape} for "
        f"axis={axis}, got shape {alpha.shape}"
    )


def _check_ntype(ntype) -> NumericType:
    if not isinstance(ntype, NumericType):
        raise TypeError(f"ntype must be a NumericType, got {type(ntype).__name__}")
    return ntype


def quantize(x: jax.Array, ntype: NumericType, alpha, *, axis: int | None = None, pair_axis: int = -1) -> jax.Array:
    """Fake-quantize `x` onto `ntype`'s grid scaled so that its maximum equals `alpha`.

    Gradients: straight-through (identity) to `x`; ``(q - x/alpha)`` (normalized units) to
    `alpha`, as in the reference, so a trainable clip value learns like LSQ.

    Args:
      x: float array.
      ntype: the number format.
      alpha: clip value: a scalar (``axis=None``) or one per slice along `axis`.
      axis: the per-channel axis of `alpha` (e.g. ``-1`` for an NNX kernel's output features).
      pair_axis: OliVe types only: the axis along which neighbours form outlier-victim pairs
        (the reduction axis of the matmul: ``-1`` for activations, ``0`` for an NNX kernel).
    """
    ntype = _check_ntype(ntype)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating array, got dtype {x.dtype}")
    alpha = jnp.maximum(_alpha_for(x, alpha, axis), _MIN_ALPHA)
    v = x.astype(alpha.dtype) / alpha
    q = round_to_grid(jax.lax.stop_gradient(v), normalized_grid(ntype))
    if ntype.is_olive:
        q = victimize(q, pair_axis)
    return ((v + jax.lax.stop_gradient(q - v)) * alpha).astype(x.dtype)


def quantize_to_codes(x: jax.Array, ntype: NumericType, alpha, *, axis: int | None = None, pair_axis: int = -1):
    """Real quantization: integer codes plus a scale with ``decode(codes) * scale ~= quantize(x)``.

    Returns ``(codes, scale)``; codes are int32 in ``0..2**bits-1`` (see ``numerics.encode``),
    `scale` broadcasts against `x` (``alpha / ntype.clip_value``). Not differentiable.
    """
    ntype = _check_ntype(ntype)
    x = jnp.asarray(x)
    alpha = jnp.maximum(_alpha_for(x, alpha, axis), _MIN_ALPHA)
    grid = normalized_grid(ntype)
    index = nearest_grid_index(x.astype(alpha.dtype) / alpha, grid)
    scale = alpha / np.float32(ntype.clip_value)
    if ntype.is_olive:
        # Integer-scale values are exact float32 integers, so the pair encoder sees them exactly.
        kept = victimize(jnp.asarray(grid)[index], pair_axis) != 0
        values = jnp.where(kept, jnp.asarray(ntype.grid, jnp.float32)[index], 0.0)
        return encode(values, ntype, pair_axis=pair_axis), scale
    # Look the code up by grid position: exact, unlike re-encoding a rescaled float.
    codes = jnp.asarray(encode(ntype.grid, ntype).astype(np.int32))[index]
    return codes, scale
