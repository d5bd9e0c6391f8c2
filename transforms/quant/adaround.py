"""AdaRound weight rounding (Nagel et al. 2020) as used by BRECQ and QDrop.

Every weight sits between two grid levels ``lo <= u <= hi`` (in grid units); AdaRound learns whether
it rounds down or up through a continuous variable ``v``: the soft weight uses
``h(v) = clip(sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)`` (the rectified sigmoid) and the hard
weight ``v >= 0``. A regularizer ``sum(1 - |2h - 1| ** beta)`` (beta annealed from large to small)
drives every ``h`` to 0 or 1 so the two agree at the end. Scales are per output channel (last axis),
chosen by an MSE search over clip ratios, like QDrop's MSE weight observer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from frugal.transforms.quant.aquant import GridSpec, fake_quant_activation, grid_position, range_to_scale

# AdaRound's rectified sigmoid stretch.
ZETA, GAMMA = 1.1, -0.1


def init_weight_rounding(w: jax.Array, grid: GridSpec, *, num_ratios: int = 40, min_ratio: float = 0.3) -> dict:
    """Per-output-channel (last axis) scale and offset by an MSE clip search, and AdaRound's state.

    Returns ``lo``/``hi`` (the grid levels around every weight, in grid units; equal where the
    weight is clipped), ``scale``/``offset`` per channel, and ``v`` with ``h(v)`` equal to the
    weight's fraction within its gap, so the soft weight starts at the float weight and the hard
    rounding ``v >= 0`` starts at round-to-nearest.
    """
    return _init_weight_rounding(jnp.asarray(w, jnp.float32), grid, num_ratios, float(min_ratio))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_weight_rounding(w, grid: GridSpec, num_ratios: int, min_ratio: float) -> dict:
    axes = tuple(range(w.ndim - 1))
    low, high = jnp.min(w, axis=axes), jnp.max(w, axis=axes)

    def error(ratio):
        scale, offset = range_to_scale(low * ratio, high * ratio, grid)
        return jnp.mean((fake_quant_activation(w, scale, offset, grid) - w) ** 2, axis=axes)

    ratios = jnp.linspace(min_ratio, 1.0, num_ratios)
    best = ratios[jnp.argmin(jax.lax.map(error, ratios), axis=0)]  # one ratio per channel
    best_scale, best_offset = range_to_scale(low * best, high * best, grid)
    u = w / best_scale + best_offset
    _, lo, hi, frac = grid_position(u, grid)
    below, above = u <= grid.values[0], u >= grid.values[-1]
    lo = jnp.where(below, grid.values[0], jnp.where(above, grid.values[-1], lo))
    hi = jnp.where(below, grid.values[0], jnp.where(above, grid.values[-1], hi))
    rest = jnp.clip(frac, 0.0, 1.0)
    v = -jnp.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    return {"lo": lo, "hi": hi, "scale": best_scale, "offset": best_offset, "v": v}


def rectified_sigmoid(v: jax.Array) -> jax.Array:
    """AdaRound's ``h(v)``: a sigmoid stretched past [0, 1] and clipped, so it reaches 0 and 1 exactly."""
    return jnp.clip(jax.nn.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rounded_weight(state: dict, h: jax.Array) -> jax.Array:
    """The (dequantized) weight for rounding decisions ``h`` in [0, 1]: soft for ``h = h(v)``,
    hard for ``h = (v >= 0)``."""
    return (state["lo"] + (state["hi"] - state["lo"]) * h - state["offset"]) * state["scale"]


def hard_weight(state: dict, v: jax.Array) -> jax.Array:
    """The weight AdaRound ends with: round up exactly where ``v >= 0``."""
    return rounded_weight(state, (v >= 0).astype(jnp.float32))


def rounding_regularizer(h: jax.Array, beta) -> jax.Array:
    """``sum(1 - |2h - 1| ** beta)``: zero once every ``h`` is 0 or 1."""
    return jnp.sum(1.0 - jnp.abs(2.0 * h - 1.0) ** beta)


def nearest_weight(w: jax.Array, state: dict, grid: GridSpec) -> jax.Array:
    """Round-to-nearest with the calibrated per-channel scale (the RTN baseline's weights)."""
    return fake_quant_activation(w, state["scale"], state["offset"], grid)


def undecided_fraction(v: jax.Array, margin: float = 0.05) -> float:
    """Fraction of weights whose soft rounding ``h(v)`` is still farther than `margin` from 0 and 1
    (where the hard rounding at the end differs from what the reconstruction optimized)."""
    h = rectified_sigmoid(v)
    return float(jnp.mean((h > margin) & (h < 1.0 - margin)))
