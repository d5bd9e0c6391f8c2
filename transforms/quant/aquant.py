"""AQuant: activation fake-quantization with a learned rounding border (PTQ).

Round-to-nearest moves a value up to the next grid level when its fraction within the gap between
two levels reaches a fixed border of 0.5. AQuant (Li et al., arXiv 2208.11945) learns the border
instead. The paper's exact border function is not public; this module implements the
*coarse-grained* form its abstract describes, with our own parameterization:

* **Position.** An activation ``x`` is mapped to grid units ``u = x / scale + offset``; ``k`` is the
  index of the grid level just below ``u`` (clipped to the grid) and ``f`` its fraction within the
  gap ``[g_k, g_{k+1})`` (``f = u - g_k`` on the uniform int grid).
* **Border table.** One border ``b[c, k]`` per channel ``c`` and per gap ``k`` (``granularity=
  "channel_level"``, the default). Ablations share it: ``"tensor"`` (one border), ``"channel"``
  (one per channel, all gaps), ``"level"`` (one per gap, all channels).
* **Parameterization.** ``b = 0.5 + (0.5 - BORDER_MARGIN) * tanh(theta)``: ``theta = 0`` is exactly
  0.5 (round-to-nearest), and every border stays in ``[BORDER_MARGIN, 1 - BORDER_MARGIN]``, inside
  (0, 1) even when ``theta`` saturates, so a learned border can never turn into a floor or a ceil.
* **Rounding.** ``q = g_{k+1} if f >= b[c, k] else g_k``. With ``b = 0.5`` this is round-to-nearest
  with ties going up (the ANT quantizer's tie rule). At inference it costs one table lookup and one
  comparison per element on top of the floor every quantizer computes (:func:`activation_codes`).
* **Learning.** The forward pass always uses the hard decision above, so training sees exactly the
  inference-time rounding. Gradients come from a smooth relaxation ``sigmoid((f - b) / T)`` of the
  step (a straight-through estimator): the border gets ``d/db`` of the relaxed level, while ``x``
  and ``scale`` get the usual LSQ gradients (identity inside the clip range, ``q - u`` for the
  scale).

Everything here is a pure function of arrays; :mod:`frugal.transforms.quant.block_recon` learns the
borders jointly with AdaRound weights and LSQ scales by block reconstruction.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from frugal.transforms.quant.numerics import KINDS, MAX_BITS, MIN_BITS, NumericType
from frugal.transforms.quant.quantizer import check_positive

GRANULARITIES = ("tensor", "channel", "level", "channel_level")
# Borders stay this far from 0 and 1, so a border always separates the two neighbouring levels.
BORDER_MARGIN = 1e-3
DEFAULT_TEMPERATURE = 0.1


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A sorted quantization grid in grid units, plus how its scale and offset are calibrated.

    `affine`: the int grid ``0 .. 2**bits - 1`` with a calibrated zero point (QDrop's asymmetric
    quantizer). Otherwise the ANT type's own grid (at its integer scale), symmetric, offset 0.
    """

    values: tuple[float, ...]
    uniform: bool
    affine: bool
    name: str

    def __post_init__(self):
        if len(self.values) < 2 or any(a >= b for a, b in zip(self.values, self.values[1:])):
            raise ValueError(f"GridSpec.values must be strictly increasing with >= 2 entries, got {self.values}")

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float32)

    @property
    def num_gaps(self) -> int:
        return len(self.values) - 1


def _check_bits(bits, name: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{name} must be an int between {MIN_BITS} and {MAX_BITS}, got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"{name}={bits} is outside the supported range {MIN_BITS}..{MAX_BITS} bits")
    return int(bits)


def grid_spec(kind: str, bits: int, *, signed: bool = False, name: str = "bits") -> GridSpec:
    """The grid for an ANT numeric type kind at `bits` bits.

    ``kind="int"`` gives the affine grid ``0 .. 2**bits - 1`` (a signed int type has the same
    levels; the zero point places them). Other kinds (``pot``, ``float``, ``flint``) give the
    type's distinct values from :class:`frugal.transforms.quant.NumericType`, symmetric around zero.
    """
    bits = _check_bits(bits, name)
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported here; choose one of {KINDS}")
    if kind == "int":
        return GridSpec(tuple(float(v) for v in range(2**bits)), uniform=True, affine=True, name=f"int{bits}")
    ntype = NumericType(kind, bits, signed)
    values = np.unique(np.asarray(ntype.grid, dtype=np.float64))
    return GridSpec(tuple(float(v) for v in values), uniform=False, affine=False, name=ntype.name)


def border_table_shape(granularity: str, channels: int, num_gaps: int) -> tuple[int, int]:
    """Shape ``(channels or 1, gaps or 1)`` of the border table for a granularity."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}; choose one of {GRANULARITIES}")
    if channels < 1 or num_gaps < 1:
        raise ValueError(f"channels={channels} and num_gaps={num_gaps} must be >= 1")
    per_channel = granularity in ("channel", "channel_level")
    per_level = granularity in ("level", "channel_level")
    return (channels if per_channel else 1, num_gaps if per_level else 1)


def init_border_logits(granularity: str, channels: int, num_gaps: int) -> jax.Array:
    """Border logits that start every border at exactly 0.5 (round-to-nearest)."""
    return jnp.zeros(border_table_shape(granularity, channels, num_gaps), jnp.float32)


def border_from_logits(theta: jax.Array) -> jax.Array:
    """Border values in ``[BORDER_MARGIN, 1 - BORDER_MARGIN]``; ``theta = 0`` gives exactly 0.5."""
    return 0.5 + (0.5 - BORDER_MARGIN) * jnp.tanh(theta)


def grid_position(u: jax.Array, grid: GridSpec) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """For grid coordinates `u`: the gap index ``k`` (clipped to ``0 .. gaps-1``), the levels
    below/above (``lo = g_k``, ``hi = g_{k+1}``) and the fraction ``f`` of `u` within the gap.

    Outside the grid ``f`` is < 0 or > 1, so any border in (0, 1) clips to the end levels.
    """
    values = jnp.asarray(grid.array)
    if grid.uniform:
        start = grid.values[0]
        k = jnp.clip(jnp.floor(u) - start, 0, grid.num_gaps - 1).astype(jnp.int32)
        lo = k.astype(u.dtype) + start
        # u - floor(u) is exact in float32, which makes border 0.5 exactly round-half-up.
        return k, lo, lo + 1.0, u - lo
    k = jnp.clip(jnp.searchsorted(values, u, side="right") - 1, 0, grid.num_gaps - 1).astype(jnp.int32)
    lo, hi = values[k], values[k + 1]
    return k, lo, hi, (u - lo) / (hi - lo)


def lookup_border(borders: jax.Array, k: jax.Array, channel_axis: int = -1) -> jax.Array:
    """The border of every element: ``borders[c, k]`` with ``c`` its index along `channel_axis`."""
    rows, cols = borders.shape
    level = k if cols > 1 else jnp.zeros_like(k)
    if rows > 1:
        axis = channel_axis % k.ndim
        if k.shape[axis] != rows:
            raise ValueError(
                f"border table has {rows} channels but the activation has {k.shape[axis]} "
                f"along channel_axis={channel_axis}"
            )
        shape = [1] * k.ndim
        shape[axis] = rows
        channel = jnp.arange(rows, dtype=jnp.int32).reshape(shape)
    else:
        channel = 0
    return borders.reshape(-1)[channel * cols + level]


_MIN_SCALE = 1e-30


def fake_quant_activation(
    x: jax.Array,
    scale,
    offset,
    grid: GridSpec,
    border_logits: jax.Array | None = None,
    *,
    channel_axis: int = -1,
    temperature: float = DEFAULT_TEMPERATURE,
) -> jax.Array:
    """Fake-quantize `x` onto ``(grid - offset) * scale``, rounding with the learned border.

    ``border_logits=None`` is round-to-nearest (border 0.5, ties up). The forward value is always
    the hard rounding; see the module docstring for the gradients.
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    check_positive(scale, "scale")
    # One compiled program per shape and grid: called eagerly (calibration, round-to-nearest weights),
    # op-by-op dispatch would compile each of its ~15 operations separately for every new shape.
    return _fake_quant(x, scale, offset, border_logits, grid=grid, channel_axis=channel_axis, temperature=temperature)


@functools.partial(jax.jit, static_argnames=("grid", "channel_axis", "temperature"))
def _fake_quant(x, scale, offset, border_logits, *, grid: GridSpec, channel_axis: int, temperature: float):
    scale = jnp.maximum(scale, _MIN_SCALE)  # a traced scale that collapsed: outputs ~0, never NaN
    u = x / scale + offset
    k, lo, hi, frac = grid_position(jax.lax.stop_gradient(u), grid)
    if border_logits is None:
        border = 0.5
    else:
        border = lookup_border(border_from_logits(border_logits), k, channel_axis)
    q = jnp.where(frac >= border, hi, lo)
    u_clipped = jnp.clip(u, grid.values[0], grid.values[-1])
    q_ste = u_clipped + jax.lax.stop_gradient(q - u_clipped)
    if border_logits is not None:
        # Zero in the forward pass; in the backward pass it hands the border the relaxed step's slope.
        soft = jax.nn.sigmoid((jax.lax.stop_gradient(frac) - border) / temperature)
        q_ste = q_ste + (hi - lo) * (soft - jax.lax.stop_gradient(soft))
    return (q_ste - offset) * scale


def activation_codes(
    x: jax.Array, scale, offset, grid: GridSpec, border_logits: jax.Array | None = None, *, channel_axis: int = -1
) -> jax.Array:
    """Inference-time integer codes (grid indices): ``k + (f >= b[c, k])``, one comparison per element.

    ``grid.values[codes]`` equals ``fake_quant_activation(...) / scale + offset``.
    """
    check_positive(scale, "scale")
    scale = jnp.maximum(scale, _MIN_SCALE)
    u = x / scale + offset
    k, _, _, frac = grid_position(u, grid)
    border = 0.5 if border_logits is None else lookup_border(border_from_logits(border_logits), k, channel_axis)
    return k + (frac >= border).astype(jnp.int32)


def calibrate_activation(
    samples: jax.Array, grid: GridSpec, *, num_ratios: int = 40, min_ratio: float = 0.3
) -> tuple[jax.Array, jax.Array]:
    """Per-tensor ``(scale, offset)`` minimizing the round-to-nearest MSE over clip ratios.

    The clip range ``[r * min, r * max]`` (affine int grids) or ``r * max|x|`` (symmetric grids) is
    searched over `num_ratios` ratios in ``[min_ratio, 1]``, like QDrop's MSE observer.
    """
    samples = jnp.asarray(samples, jnp.float32)
    if samples.size == 0:
        raise ValueError("calibrate_activation: samples is empty")
    if not isinstance(samples, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(samples))):
        raise ValueError("calibrate_activation: samples contain NaN or inf; calibrate on finite activations")
    return _calibrate(samples, grid, num_ratios, float(min_ratio))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _calibrate(samples, grid: GridSpec, num_ratios: int, min_ratio: float):
    low, high = jnp.min(samples), jnp.max(samples)

    def error(ratio):
        scale, offset = range_to_scale(low * ratio, high * ratio, grid)
        return jnp.mean((fake_quant_activation(samples, scale, offset, grid) - samples) ** 2)

    ratios = jnp.linspace(min_ratio, 1.0, num_ratios)
    best = ratios[jnp.argmin(jax.lax.map(error, ratios))]
    return range_to_scale(low * best, high * best, grid)


def range_to_scale(low, high, grid: GridSpec):
    """Scale and offset mapping ``[low, high]`` onto the grid (affine) or ``max(|low|, |high|)``
    onto the grid's largest magnitude (symmetric)."""
    low = jnp.minimum(low, 0.0)
    high = jnp.maximum(high, 0.0)
    if grid.affine:
        scale = jnp.maximum((high - low) / (grid.values[-1] - grid.values[0]), 1e-8)
        offset = jnp.clip(jnp.round(-low / scale), grid.values[0], grid.values[-1])
        return scale, offset
    top = max(abs(grid.values[0]), abs(grid.values[-1]))
    scale = jnp.maximum(jnp.maximum(-low, high) / top, 1e-8)
    return scale, jnp.zeros_like(scale)
