"""ANT type selection: per tensor, the number format and clip value with the lowest MSE.

The reference (``Quantizer.search_adaptive_numeric_type`` / ``search_mse``) tries each candidate
type and, for each, clip values ``alpha = k% * max|x|`` for k in [75, 150) in 1% steps, scoring the
fake-quantized tensor by mean squared error: per output channel for weights (one alpha per
channel, channel errors combined), per tensor for activations. The type with the lowest error
wins, with its best alpha. Here the whole sweep (all candidates x all alphas) is one jitted
computation; the winner is picked on the host. It sorts the tensor once and scores each clip
value with K binary searches over prefix sums (exact nearest-grid MSE in float64), so a sweep
costs about one sort instead of candidates x alphas full quantizations.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from frugal.transforms.quant.numerics import ALL_KINDS, OLIVE_KINDS, NumericType, check_bits, victimize
from frugal.transforms.quant.quantizer import normalized_grid, round_to_grid

KINDS = ALL_KINDS  # candidate names accepted here

DEFAULT_CANDIDATES = ("int", "pot", "flint", "float")


@dataclasses.dataclass(frozen=True, eq=False)
class TypeChoice:
    """Result of :func:`select_numeric_type`.

    Attributes:
      kind: the winning kind (``"int"``, ``"pot"``, ``"flint"``, ``"float"``).
      ntype: the winning :class:`NumericType`.
      alpha: its clip value: a float (per tensor) or a float32 array with one value per channel.
      mse: its mean squared quantization error (per channel: the mean over channels of each
        channel's best error).
      mse_per_candidate: the same error for every candidate, keyed by kind name (or by
        ``NumericType.name`` for candidates given as types).
      alpha_per_candidate: each candidate's best clip value(s), same keys.
      signed: whether signed grids were used.
    """

    kind: str
    ntype: NumericType
    alpha: Any
    mse: float
    mse_per_candidate: dict
    alpha_per_candidate: dict = dataclasses.field(default_factory=dict)
    signed: bool = True


def alpha_ratios(alpha_range=(0.75, 1.5), alpha_step: float = 0.01) -> np.ndarray:
    """Clip values as fractions of max|x|: ``lo, lo+step, ...`` below ``hi`` (half-open, like the
    reference's ``range(75, 150)``)."""
    try:
        lo, hi = (float(v) for v in alpha_range)
    except (TypeError, ValueError):
        raise TypeError(f"alpha_range must be a pair (low, high) of numbers, got {alpha_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"alpha_range must satisfy 0 < low < high, got {alpha_range!r}")
    if not (isinstance(alpha_step, (int, float)) and np.isfinite(alpha_step) and alpha_step > 0):
        raise ValueError(f"alpha_step must be a positive number, got {alpha_step!r}")
    count = max(1, int(np.ceil((hi - lo) / alpha_step - 1e-9)))
    return (lo + alpha_step * np.arange(count)).astype(np.float32)


def _padded_grids(ntypes: Sequence[NumericType]) -> np.ndarray:
    """Normalized grids stacked to one (C, K) array; shorter ones repeat their maximum, which
    leaves nearest-value rounding unchanged."""
    grids = [normalized_grid(t) for t in ntypes]
    width = max(len(g) for g in grids)
    return np.stack([np.concatenate([g, np.full(width - len(g), g[-1], np.float32)]) for g in grids])


def _channel_view(x: jax.Array, axis: int | None):
    """Shape to broadcast one value per channel against x, and the axes to average over."""
    if axis is None:
        return (), tuple(range(x.ndim))
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return tuple(shape), tuple(a for a in range(x.ndim) if a != axis)


def _sorted_errors(sorted_data, prefix1, prefix2, grid, alphas):
    """MSE of nearest-grid rounding for one channel and every alpha, from sorted data.

    Rounding sends the values between consecutive grid midpoints (scaled by alpha) to one grid
    value, so with prefix sums of x and x**2 each alpha costs K binary searches, not N roundings:
    sum over bins of (S2 - 2 q S1 + q**2 n). Float64 keeps the differences of prefix sums exact
    enough at 8 bits. A value exactly on a scaled midpoint goes up (side="left"), as ties do.
    """
    count = sorted_data.shape[0]
    midpoints = (grid[:-1] + grid[1:]) * 0.5

    def one(alpha):
        bounds = jnp.searchsorted(sorted_data, midpoints * alpha, side="left")
        edges = jnp.concatenate([jnp.zeros(1, bounds.dtype), bounds, jnp.full(1, count, bounds.dtype)])
        n = (edges[1:] - edges[:-1]).astype(jnp.float64)
        s1 = prefix1[edges[1:]] - prefix1[edges[:-1]]
        s2 = prefix2[edges[1:]] - prefix2[edges[:-1]]
        q = grid * alpha
        return jnp.maximum(jnp.sum(s2 - 2.0 * q * s1 + q * q * n), 0.0) / count

    return jax.vmap(one)(alphas)


@functools.partial(jax.jit, static_argnames=("axis", "pair_axis", "olive"))
def _sweep(x, grids, alphas, olive, axis, pair_axis):
    """MSE for every (candidate, alpha, channel): shape (C, A, channels), channels = 1 per tensor.

    grids: (C, K) normalized grids; alphas: (C, A, channels) clip values; olive: a static tuple
    of per-candidate flags. Plain grids use the sorted-prefix-sum method (needs x64); OliVe
    candidates, whose victims couple neighbours, quantize element by element.
    """
    x = x.astype(jnp.float32)
    alphas = jnp.maximum(alphas, 1e-30)
    shape, reduce_axes = _channel_view(x, axis)
    channels = x.reshape(-1, 1) if axis is None else jnp.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    sorted_data = jnp.sort(channels.astype(jnp.float64), axis=0)
    zero = jnp.zeros((1, sorted_data.shape[1]), jnp.float64)
    prefix1 = jnp.concatenate([zero, jnp.cumsum(sorted_data, axis=0)])
    prefix2 = jnp.concatenate([zero, jnp.cumsum(sorted_data * sorted_data, axis=0)])

    def elementwise_error(grid, alpha):
        alpha = alpha.astype(jnp.float32).reshape(shape)
        q = victimize(round_to_grid(x / alpha, grid.astype(jnp.float32)), pair_axis)
        return jnp.mean(jnp.square(q * alpha - x), axis=reduce_axes).reshape(-1).astype(jnp.float64)

    rows = []
    for c, is_olive in enumerate(olive):
        if is_olive:
            rows.append(jax.lax.map(lambda alpha: elementwise_error(grids[c], alpha), alphas[c]))
        else:
            per_channel = jax.vmap(_sorted_errors, in_axes=(1, 1, 1, None, 1), out_axes=1)
            rows.append(per_channel(sorted_data, prefix1, prefix2, grids[c], alphas[c]))
    return jnp.stack(rows)


def mse_sweep(x, ntypes: Sequence[NumericType], alphas, *, axis: int | None = None, pair_axis: int = -1) -> np.ndarray:
    """Quantization MSE of `x` for every type and clip value, as one jitted computation.

    `alphas` is (len(ntypes), A, channels) (or (len(ntypes), A) per tensor); channels is 1 for
    ``axis=None`` and ``x.shape[axis]`` otherwise. Returns float64 (len(ntypes), A, channels).
    """
    ntypes = list(ntypes)
    alphas = np.asarray(alphas, np.float64)
    if alphas.ndim == 2:
        alphas = alphas[..., None]
    olive = tuple(t.is_olive for t in ntypes)
    with jax.enable_x64(True):  # float64 prefix sums; scoped so nothing else changes precision
        grids = jnp.asarray(_padded_grids(ntypes), jnp.float64)
        out = _sweep(jnp.asarray(x, jnp.float32), grids, jnp.asarray(alphas), olive, axis, pair_axis)
        return np.asarray(out, np.float64)


def _base_clip(data: np.ndarray, axis: int | None, olive: bool) -> np.ndarray:
    """Per channel (or one) reference point for the alpha sweep: max|x| for ANT types; for OliVe,
    max(|mean + 3 std|, |mean - 3 std|) as in its reference, so outliers fall beyond the clip."""
    rows = data.reshape(-1, 1) if axis is None else np.moveaxis(data, axis, -1).reshape(-1, data.shape[axis])
    if not olive:
        return np.max(np.abs(rows), axis=0).astype(np.float32)
    mean, std = rows.mean(axis=0), rows.std(axis=0, ddof=1) if rows.shape[0] > 1 else np.zeros(rows.shape[1])
    return np.maximum(np.abs(mean + 3 * std), np.abs(mean - 3 * std)).astype(np.float32)


def _concrete_data(x) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise TypeError("select_numeric_type needs concrete calibration data; call it outside jax.jit/grad")
    data = np.asarray(x)
    if data.size == 0:
        raise ValueError("x (calibration data) is empty; pass at least one value")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise TypeError(f"x must be a real numeric array, got dtype {data.dtype}")
    if not np.all(np.isfinite(data)):
        raise ValueError("x (calibration data) contains NaN or inf; clean it before calibrating")
    return data.astype(np.float32)


def _candidate_types(candidates, bits: int, signed: bool) -> list[tuple[str, NumericType]]:
    if isinstance(candidates, (str, NumericType)):
        candidates = (candidates,)
    try:
        candidates = list(candidates)
    except TypeError:
        raise TypeError(f"candidates must be a sequence of kind names {KINDS} or NumericTypes") from None
    if not candidates:
        raise ValueError(f"candidates must name at least one of {KINDS}")
    named = []
    for candidate in candidates:
        if isinstance(candidate, NumericType):
            named.append((candidate.name, candidate))
        elif isinstance(candidate, str):
            if candidate not in KINDS:
                raise ValueError(f"candidates must be kinds from {KINDS}, got {candidate!r}")
            # OliVe needs a sign (its victim marker is the negative-zero code), so it is signed
            # even for non-negative data.
            named.append((candidate, NumericType(candidate, bits, signed or candidate in OLIVE_KINDS)))
        else:
            raise TypeError(f"candidates must be kind names {KINDS} or NumericTypes, got {candidate!r}")
    keys = [key for key, _ in named]
    if len(set(keys)) != len(keys):
        raise ValueError(f"candidates must not repeat, got {keys}")
    return named


def select_numeric_type(
    x,
    bits: int,
    candidates=DEFAULT_CANDIDATES,
    *,
    signed: bool | None = None,
    alpha_range=(0.75, 1.5),
    alpha_step: float = 0.01,
    axis: int | None = None,
    pair_axis: int = -1,
    olive_alpha_range=(0.75, 2.5),
    olive_alpha_step: float = 0.02,
) -> TypeChoice:
    """Pick the lowest-MSE number format and clip value for one tensor (ANT's type selection).

    Args:
      x: calibration data (a weight, or one batch of a layer's input). Must be non-empty and
        finite; runs eagerly (not under jit).
      bits: width of the candidate types, 2..8.
      candidates: kind names (``"int"``, ``"pot"``, ``"flint"``, ``"float"``) and/or
        :class:`NumericType` instances (used as given). Ties go to the earlier candidate.
      signed: grid signedness; ``None`` decides from the data (min >= 0 -> unsigned), as the
        reference does for activations.
      alpha_range, alpha_step: clip values swept, as fractions of max|x| (half-open range). The
        reference raises the lower end to 95% above 6 bits: pass ``(0.95, 1.5)`` to match it.
      axis: per-channel selection along this axis (weights' output channels); ``None`` for one
        clip value per tensor (activations).
      pair_axis, olive_alpha_range, olive_alpha_step: for OliVe candidates (``"olive"``,
        ``"olive-int"``, always signed): the outlier-victim pair axis, and the clip sweep as
        fractions of max(|mean +- 3 std|) (the OliVe reference's 75%..250% in 2% steps).
    """
    bits = check_bits(bits)
    data = _concrete_data(x)
    if axis is not None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis must be an int or None, got {axis!r}")
        if not -data.ndim <= axis < data.ndim:
            raise ValueError(f"axis must be in [{-data.ndim}, {data.ndim}) for x of shape {data.shape}, got {axis}")
        axis = int(axis) % data.ndim
    if signed is None:
        signed = bool(data.min() < 0)
    elif not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True, False or None, got {signed!r}")
    named = _candidate_types(candidates, bits, bool(signed))
    if pair_axis is not None and not -data.ndim <= pair_axis < data.ndim:
        raise ValueError(
            f"pair_axis must be in [{-data.ndim}, {data.ndim}) for x of shape {data.shape}, got {pair_axis}"
        )
    ant_ratios = alpha_ratios(alpha_range, alpha_step)
    olive_ratios = alpha_ratios(olive_alpha_range, olive_alpha_step)
    ratio_sets = [olive_ratios if t.is_olive else ant_ratios for _, t in named]
    width = max(len(r) for r in ratio_sets)
    # One (A, channels) block of clip values per candidate; shorter sweeps repeat their last
    # value, which never beats the first occurrence in the argmin below.
    alphas = np.stack(
        [
            np.outer(np.pad(r, (0, width - len(r)), mode="edge"), _base_clip(data, axis, t.is_olive))
            for r, (_, t) in zip(ratio_sets, named)
        ]
    ).astype(np.float32)

    errors = mse_sweep(data, [t for _, t in named], alphas, axis=axis, pair_axis=pair_axis)
    best_ratio = np.argmin(errors, axis=1)  # (C, channels); first minimum, like the reference
    best_error = np.take_along_axis(errors, best_ratio[:, None, :], axis=1)[:, 0, :]
    best_alpha = np.take_along_axis(alphas, best_ratio[:, None, :], axis=1)[:, 0, :]
    if axis is None:
        alphas = [float(a[0]) for a in best_alpha]
    else:
        alphas = [a.astype(np.float32) for a in best_alpha]
    scores = best_error.mean(axis=1)
    winner = int(np.argmin(scores))
    key, ntype = named[winner]
    return TypeChoice(
        kind=ntype.kind,
        ntype=ntype,
        alpha=alphas[winner],
        mse=float(scores[winner]),
        mse_per_candidate={k: float(s) for (k, _), s in zip(named, scores)},
        alpha_per_candidate={k: a for (k, _), a in zip(named, alphas)},
        signed=ntype.signed,
    )
