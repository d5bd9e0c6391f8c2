"""ANT numeric types: exact value grids and bit-level encoders/decoders.

ANT (Guo et al., MICRO'22) picks, per tensor, one of several 4/8-bit number formats. Each format
here is a :class:`NumericType`: a kind (``"int"``, ``"pot"``, ``"float"``, ``"flint"``), a width of
2 to 8 bits and a signedness. Every type has

* an exact sorted **value grid** (:func:`value_grid`) equal, up to one global scale, to the grid the
  reference implementation (clevercool/ANT-Quantization, ``quant_modules.py``) builds;
* a **bit-level codec**: :func:`decode` turns integer codes into values, :func:`encode` turns values
  on the grid back into codes, and ``encode(decode(c)) == c`` for every code;
* :func:`decode_parts`, which splits a code into ``(integer, shift)`` with
  ``value = integer * 2**shift``. That is what a "unified PE" computes with: a small integer
  multiply plus a shift. For flint the split is found by leading-one detection.

Grids are given at their *integer scale*: the smallest scale at which every value is an integer
(int: ``-8..7``; unsigned flint-4: ``0..7, 8..14 step 2, 16, 24, 32, 64``). The scale is
arbitrary; the quantizer divides by the grid maximum anyway.

Code layouts (``B`` = value bits = ``bits`` for unsigned types, ``bits - 1`` for signed ones):

* int: plain binary, two's complement when signed (signed 4-bit: -8..7, like the reference).
* pot, float, flint, signed: sign bit on top, then a ``B``-bit magnitude code. The negative-zero
  code decodes to ``-0.0`` and ``encode`` maps ``-0.0`` back to it, so the round trip holds for every
  code. The reference pads the same grids with a duplicate zero; the distinct values are equal.
* pot magnitude: 0 -> 0, c -> 2**(c-1).
* float magnitude (``E`` exponent, ``M = B - E`` mantissa bits, default ``E = min(3, B)`` like the
  reference): exponent field 0 is subnormal (``m``), otherwise ``2**(e-1) * (2**M + m)``.
* flint magnitude: MSB 0 -> the other ``B-1`` bits are a plain integer; MSB 1 -> a run of ``k``
  leading ones is a unary exponent, a 0, then ``B-1-k`` mantissa bits ``m``:
  ``(2**(B-1-k) + m) * 2**(2k-1)``; all ones is ``2**(2B-2)``. (4-bit: ``10mm`` -> 8+2m,
  ``110m`` -> 16+8m, ``1110`` -> 32, ``1111`` -> 64.)

The reference's flint generator asserts at least 2 value bits, so it has no signed 2-bit flint;
ours extends the layout above to ``B = 1`` (grid ``{-1, 0, 1}``). Likewise its float generator
breaks for signed 2-bit; ours uses ``E = min(3, B)``, which reproduces every width it does build.

Beyond the paper, the OliVe types (``"olive"`` with flint normals, ``"olive-int"`` with int
normals; signed, 3..8 bits) add "abfloat" outliers beyond the clip value, each stored in place of
a zeroed pair partner; their codec works on pairs (see the OliVe section below).

The codec accepts NumPy arrays (exact, float64 values) or JAX arrays (jit-able, float32 values).
Unsigned 8-bit PoT reaches 2**254, beyond float32: use NumPy for it (the reference never uses PoT
at 8 bits; its selection forces int above 6 bits).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("int", "pot", "float", "flint")
# OliVe (ISCA'23) outlier-victim pair types: normal values on a flint ("olive") or int
# ("olive-int") grid plus "abfloat" outliers, which take over their pair partner's code.
OLIVE_KINDS = ("olive", "olive-int")
ALL_KINDS = KINDS + OLIVE_KINDS
MIN_BITS = 2
MAX_BITS = 8
DEFAULT_FLOAT_EXPONENT_BITS = 3  # the reference's float_value(eb=3)


def check_bits(bits: Any, name: str = "bits") -> int:
    """`bits` as an int, after checking it is an int in MIN_BITS..MAX_BITS (the error names `name`)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{name} must be an int between {MIN_BITS} and {MAX_BITS}, got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"{name} must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
    return int(bits)


def _check_kind(kind: Any) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    if kind not in ALL_KINDS:
        raise ValueError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    return kind


@dataclasses.dataclass(frozen=True)
class NumericType:
    """One ANT number format.

    Attributes:
      kind: ``"int"``, ``"pot"``, ``"float"`` or ``"flint"``.
      bits: total width including the sign bit, 2..8.
      signed: whether negative values exist.
      exponent_bits: float only; the exponent field width (defaults to ``min(3, value_bits)``,
        the reference's choice). The mantissa gets the rest.
    """

    kind: str
    bits: int
    signed: bool
    exponent_bits: int | None = None

    def __post_init__(self):
        _check_kind(self.kind)
        object.__setattr__(self, "bits", check_bits(self.bits))
        if not isinstance(self.signed, (bool, np.bool_)):
            raise TypeError(f"signed must be a bool, got {self.signed!r}")
        object.__setattr__(self, "signed", bool(self.signed))
        if self.kind in OLIVE_KINDS and (not self.signed or self.bits < 3):
            raise ValueError(
                f"OliVe types must be signed with bits >= 3 (the negative-zero code marks a victim "
                f"and outliers need 2 exponent bits), got signed={self.signed}, bits={self.bits}"
            )
        if self.kind == "float":
            if self.exponent_bits is None:
                object.__setattr__(self, "exponent_bits", min(DEFAULT_FLOAT_EXPONENT_BITS, self.value_bits))
            elif isinstance(self.exponent_bits, bool) or not isinstance(self.exponent_bits, (int, np.integer)):
                raise TypeError(f"exponent_bits must be an int, got {self.exponent_bits!r}")
            elif not 1 <= self.exponent_bits <= self.value_bits:
                raise ValueError(
                    f"exponent_bits must be between 1 and {self.value_bits} (the value bits of a "
                    f"{'signed' if self.signed else 'unsigned'} {self.bits}-bit float), "
                    f"got {self.exponent_bits}"
                )
            object.__setattr__(self, "exponent_bits", int(self.exponent_bits))
        elif self.exponent_bits is not None:
            raise ValueError(
                f"exponent_bits applies only to kind 'float', got exponent_bits="
                f"{self.exponent_bits} for kind {self.kind!r}"
            )

    @property
    def value_bits(self) -> int:
        """Bits left for the magnitude (``bits - 1`` when signed)."""
        return self.bits - 1 if self.signed else self.bits

    @property
    def mantissa_bits(self) -> int | None:
        """Float only: the mantissa field width."""
        return None if self.kind != "float" else self.value_bits - self.exponent_bits

    @property
    def num_codes(self) -> int:
        return 1 << self.bits

    @property
    def name(self) -> str:
        """Short label, e.g. ``flint4u``, ``int8s``, ``float4s-e3m0``."""
        label = f"{self.kind}{self.bits}{'s' if self.signed else 'u'}"
        if self.kind == "float":
            label += f"-e{self.exponent_bits}m{self.mantissa_bits}"
        return label

    @property
    def is_olive(self) -> bool:
        return self.kind in OLIVE_KINDS

    @property
    def normal_type(self) -> NumericType:
        """OliVe: the type of its normal values (signed flint or int); otherwise itself."""
        if not self.is_olive:
            return self
        return NumericType("flint" if self.kind == "olive" else "int", self.bits, True)

    @property
    def clip_value(self) -> float:
        """The grid value that the clip value alpha maps to: the largest value, or for OliVe the
        largest *normal* value (outliers lie beyond the clip, as in the reference)."""
        if self.is_olive:
            return float(_olive_normal_grid(self)[-1])
        return self.max_value

    @property
    def grid(self) -> np.ndarray:
        """Sorted distinct representable values at the integer scale (a fresh copy)."""
        return _grid_of(self).copy()

    @property
    def max_value(self) -> float:
        return float(_grid_of(self)[-1])

    @property
    def min_value(self) -> float:
        return float(_grid_of(self)[0])


@functools.cache
def _grid_of(ntype: NumericType) -> np.ndarray:
    if ntype.is_olive:
        values = np.concatenate([_olive_normal_grid(ntype), -_olive_outliers(ntype), _olive_outliers(ntype)])
    else:
        values = decode(np.arange(ntype.num_codes), ntype)
    grid = np.unique(values)
    grid[grid == 0] = 0.0  # keep +0, never the -0 that np.unique may return
    grid.flags.writeable = False
    return grid


def value_grid(kind: str, bits: int, *, signed: bool, exponent_bits: int | None = None) -> np.ndarray:
    """Sorted distinct values of a type, at its integer scale, as a float64 NumPy array.

    Equal up to scale to the reference's grids, e.g. unsigned 4-bit flint is
    ``{0,1,2,3,4,5,6,7,8,10,12,14,16,24,32,64}`` and signed 4-bit flint ``±{0,1,2,3,4,6,8,16}``.
    """
    return NumericType(kind, bits, signed, exponent_bits).grid


def as_numeric_type(spec: Any, bits: int | None = None, *, signed: bool | None = None) -> NumericType:
    """A NumericType from itself or from a kind name plus ``bits`` and ``signed``."""
    if isinstance(spec, NumericType):
        return spec
    if bits is None or signed is None:
        raise ValueError(f"a kind name like {spec!r} needs bits and signed to make a numeric type")
    return NumericType(_check_kind(spec), bits, bool(signed))


# ---------------------------------------------------------------------------------------------
# Bit-level codec. Written once against an array namespace `xp` (numpy or jax.numpy) so the same
# integer logic runs exactly in NumPy and traced under jit (also inside the Pallas kernel).


def _namespace(x) -> Any:
    return jnp if isinstance(x, jax.Array) else np


def _leading_ones(code, width: int, xp):
    """Length of the run of 1s at the top of a `width`-bit code (leading-one detection)."""
    count = xp.zeros_like(code)
    for run in range(1, width + 1):
        top = code >> (width - run)
        count = count + (top == (1 << run) - 1).astype(code.dtype)
    return count


def _magnitude_parts(mag, ntype: NumericType, xp):
    """(integer, shift) with magnitude value = integer * 2**shift, for an unsigned code field."""
    b = ntype.value_bits
    zero = xp.zeros_like(mag)
    if ntype.kind == "int":
        return mag, zero
    if ntype.kind == "pot":
        return (mag > 0).astype(mag.dtype), xp.maximum(mag - 1, 0)
    if ntype.kind == "float":
        m_bits = ntype.mantissa_bits
        exponent = mag >> m_bits
        mantissa = mag & ((1 << m_bits) - 1)
        normal = exponent > 0
        integer = xp.where(normal, mantissa + (1 << m_bits), mantissa)
        return integer, xp.where(normal, exponent - 1, 0)
    # flint
    ones = _leading_ones(mag, b, xp)
    mantissa_bits = xp.maximum(b - 1 - ones, 0)
    mantissa = mag & ((xp.ones_like(mag) << mantissa_bits) - 1)
    integer = xp.where(ones >= b, 1, (xp.ones_like(mag) << mantissa_bits) + mantissa)
    shift = xp.where(ones >= b, 2 * b - 2, 2 * ones - 1)
    integer = xp.where(ones == 0, mag, integer)
    shift = xp.where(ones == 0, 0, shift)
    return integer, shift


def _as_codes(codes, ntype: NumericType, xp):
    codes = xp.asarray(codes)
    if not xp.issubdtype(codes.dtype, xp.integer):
        raise TypeError(f"codes must be an integer array, got dtype {codes.dtype}")
    if xp is np and codes.size and (codes.min() < 0 or codes.max() >= ntype.num_codes):
        raise ValueError(
            f"codes must lie in 0..{ntype.num_codes - 1} for {ntype.name}, got {codes.min()}..{codes.max()}"
        )
    return codes.astype(np.int64 if xp is np else jnp.int32)


def decode_parts(codes, ntype: NumericType):
    """Split codes into ``(integer, shift)`` with value ``integer * 2**shift`` (integer signed).

    For the negative-zero code the integer is 0. Works on NumPy (int64) and JAX (int32) arrays.
    """
    xp = _namespace(codes)
    codes = _as_codes(codes, ntype, xp)
    if ntype.is_olive:
        raise ValueError(
            f"decode_parts works per element; an OliVe code's value depends on its pair partner, "
            f"use decode for {ntype.name}"
        )
    if ntype.kind == "int":
        if ntype.signed:
            half = 1 << (ntype.bits - 1)
            return xp.where(codes >= half, codes - (1 << ntype.bits), codes), xp.zeros_like(codes)
        return codes, xp.zeros_like(codes)
    if not ntype.signed:
        return _magnitude_parts(codes, ntype, xp)
    sign_bit = 1 << ntype.value_bits
    integer, shift = _magnitude_parts(codes & (sign_bit - 1), ntype, xp)
    return xp.where(codes & sign_bit, -integer, integer), shift


def decode(codes, ntype: NumericType, *, pair_axis: int = -1):
    """Values of integer codes at the grid's integer scale.

    NumPy in -> float64 out (exact for every type); JAX in -> float32 out. The signed
    negative-zero code gives ``-0.0``. OliVe types decode pairs along `pair_axis`.
    """
    xp = _namespace(codes)
    dtype = np.float64 if xp is np else jnp.float32
    if ntype.is_olive:
        return _olive_decode(_as_codes(codes, ntype, xp), ntype, pair_axis, xp)
    integer, shift = decode_parts(codes, ntype)
    values = xp.ldexp(integer.astype(dtype), shift.astype(np.int32 if xp is jnp else np.int64))
    if ntype.signed and ntype.kind != "int":
        codes = xp.asarray(codes)
        negative = (codes & (1 << ntype.value_bits)) != 0
        values = xp.where(negative, -xp.abs(values), values)  # -0.0 for the negative-zero code
    return values


def _magnitude_code(mag, ntype: NumericType, xp):
    """Inverse of _magnitude_parts for non-negative on-grid values (float array) -> int code."""
    b = ntype.value_bits
    idtype = np.int64 if xp is np else jnp.int32
    _, exp2 = xp.frexp(mag)  # mag in [2**(exp2-1), 2**exp2) for mag > 0
    exp2 = exp2.astype(idtype)
    if ntype.kind == "int":
        return xp.round(mag).astype(idtype)
    if ntype.kind == "pot":
        return xp.where(mag > 0, exp2, 0)
    if ntype.kind == "float":
        m_bits = ntype.mantissa_bits
        subnormal = mag < (1 << m_bits)
        exponent = xp.maximum(exp2 - m_bits, 1)
        mantissa = xp.ldexp(mag, -(exponent - 1)) - (1 << m_bits)
        normal_code = (exponent << m_bits) + xp.round(mantissa).astype(idtype)
        return xp.where(subnormal, xp.round(mag).astype(idtype), normal_code)
    # flint
    small = mag < (1 << (b - 1))
    ones = xp.clip(exp2 - b + 1, 1, b)
    mantissa = xp.ldexp(mag, -(2 * ones - 1)) - xp.ldexp(xp.ones_like(mag), b - 1 - ones)
    mantissa = xp.where(ones >= b, 0, xp.round(mantissa)).astype(idtype)
    prefix = ((xp.ones_like(ones) << ones) - 1) << (b - ones)
    return xp.where(small, xp.round(mag).astype(idtype), prefix | mantissa)


def encode(values, ntype: NumericType, *, pair_axis: int = -1):
    """Integer codes (int64 for NumPy, int32 for JAX) of values that lie on the type's grid.

    Values are at the integer scale of :func:`value_grid`. ``-0.0`` maps to the negative-zero code
    of signed pot/float/flint. NumPy input is checked to lie on the grid (ValueError otherwise);
    under jit, off-grid values give unspecified codes. OliVe types encode pairs along
    `pair_axis`: an outlier's partner must be 0 (see :func:`victimize`).
    """
    xp = _namespace(values)
    fdtype = np.float64 if xp is np else jnp.float32
    values = xp.asarray(values, dtype=fdtype)
    if ntype.is_olive:
        codes = _olive_encode(values, ntype, pair_axis, xp)
    elif ntype.kind == "int":
        codes = xp.round(values).astype(np.int64 if xp is np else jnp.int32)
        if ntype.signed:
            codes = codes & ((1 << ntype.bits) - 1)
    elif ntype.signed:
        negative = xp.signbit(values)
        magnitude = _magnitude_code(xp.abs(values), ntype, xp)
        codes = xp.where(negative, magnitude | (1 << ntype.value_bits), magnitude)
    else:
        codes = _magnitude_code(values, ntype, xp)
    if xp is np and values.size:
        out_of_range = (codes < 0) | (codes >= ntype.num_codes)
        codes_safe = np.where(out_of_range, 0, codes)
        decoded = decode(codes_safe, ntype, pair_axis=pair_axis)
        if out_of_range.any() or not np.array_equal(decoded, values):
            bad = values[out_of_range | (decoded != values)]
            raise ValueError(
                f"values must lie on the {ntype.name} grid (integer scale, see value_grid)"
                + (" with every outlier's pair partner 0" if ntype.is_olive else "")
                + f", got e.g. {bad[:3].tolist()}"
            )
    return codes


# ---------------------------------------------------------------------------------------------
# OliVe outlier-victim pairs (Guo et al., ISCA'23; reference: ANT-Quantization/olive_quantization).
#
# Values come in pairs (elements 2i, 2i+1 along the pair axis). A pair holds either two normal
# codes, or one outlier and a "victim" forced to 0 whose code is the identifier ``1 << B`` (the
# negative-zero code of sign-magnitude flint, the unused -2**B of int). The outlier's own code is a
# sign plus a B-bit "abfloat" magnitude: 2 exponent bits e and B-2 mantissa bits j, with
# reference-scale value 2**(5+e) * (1 + j / 2**(B-2)) (code 0, which would be 32, is unused). The
# reference scales normal values so that their maximum is 32 (flint) or 28 (4-bit int); at our
# integer scale outliers are ``(2**(B-2) + j) << (e + B)`` for flint normals and ``<< (e + 2)``
# for int normals.


def _olive_normal_grid(ntype: NumericType) -> np.ndarray:
    normal = ntype.normal_type.grid
    return normal[normal > -normal[-1] - 0.5]  # int: drop -2**B, its code is the identifier


def _olive_outlier_magnitude(mag, ntype: NumericType, xp):
    b = ntype.value_bits
    m_bits = b - 2
    exponent, mantissa = mag >> m_bits, mag & ((1 << m_bits) - 1)
    shift = exponent + (b if ntype.kind == "olive" else 2)
    dtype = np.float64 if xp is np else jnp.float32
    return xp.ldexp((mantissa + (1 << m_bits)).astype(dtype), shift.astype(np.int64 if xp is np else jnp.int32))


def _olive_outliers(ntype: NumericType) -> np.ndarray:
    """Positive outlier magnitudes, ascending (codes 1 .. 2**B - 1)."""
    return _olive_outlier_magnitude(np.arange(1, 1 << ntype.value_bits), ntype, np)


def _pairs(x, pair_axis: int, xp, fill):
    """Move `pair_axis` last, pad it to even length with `fill`, split into (..., n/2, 2)."""
    x = xp.moveaxis(x, pair_axis, -1)
    length = x.shape[-1]
    if length % 2:
        x = xp.concatenate([x, xp.full(x.shape[:-1] + (1,), fill, x.dtype)], axis=-1)
    return x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2)), length


def _unpairs(x, length: int, pair_axis: int, xp):
    x = x.reshape(x.shape[:-2] + (x.shape[-2] * 2,))[..., :length]
    return xp.moveaxis(x, -1, pair_axis)


def victimize(q, pair_axis: int = -1, *, threshold: float = 1.0):
    """Zero the partner of every outlier (``|q| > threshold``) in each pair along `pair_axis`;
    if both are outliers the first one stays, as in the reference.

    `q` holds values on an OliVe grid at a scale where the largest normal value is `threshold`
    (the quantizer's normalized scale: 1). An odd last element has no partner and is kept.
    """
    xp = _namespace(q)
    pairs, length = _pairs(q, pair_axis, xp, 0)
    first, second = pairs[..., 0], pairs[..., 1]
    first_out = xp.abs(first) > threshold
    second_out = xp.abs(second) > threshold
    first = xp.where(second_out & ~first_out, 0, first)
    second = xp.where(first_out, 0, second)
    return _unpairs(xp.stack([first, second], axis=-1), length, pair_axis, xp)


def _olive_decode(codes, ntype: NumericType, pair_axis: int, xp):
    b = ntype.value_bits
    identifier = 1 << b
    normal = decode(codes, ntype.normal_type)
    normal = xp.where(codes == identifier, 0.0, normal) + 0.0  # +0.0 turns -0.0 into 0.0
    outlier = _olive_outlier_magnitude(codes & (identifier - 1), ntype, xp)
    outlier = xp.where(codes & identifier, -outlier, outlier)
    pairs, length = _pairs(codes, pair_axis, xp, 0)
    partner_is_id = xp.flip(pairs == identifier, axis=-1)
    partner_is_id = _unpairs(partner_is_id, length, pair_axis, xp)
    return xp.where(partner_is_id & (codes != identifier), outlier, normal)


def _olive_encode(values, ntype: NumericType, pair_axis: int, xp):
    b = ntype.value_bits
    identifier = 1 << b
    idtype = np.int64 if xp is np else jnp.int32
    clip = ntype.clip_value
    outlier = xp.abs(values) > clip
    normal_values = xp.where(outlier, 0.0, values) + 0.0  # no negative zero among normal values
    normal_codes = encode(normal_values, ntype.normal_type).astype(idtype)
    _, exp2 = xp.frexp(xp.abs(values))  # |v| in [2**(exp2-1), 2**exp2)
    m_bits = b - 2
    base_shift = b if ntype.kind == "olive" else 2
    exponent = exp2.astype(idtype) - 1 - m_bits - base_shift
    mantissa = xp.ldexp(xp.abs(values), -(exponent + base_shift)) - (1 << m_bits)
    magnitude = (exponent << m_bits) + xp.round(mantissa).astype(idtype)
    outlier_codes = xp.where(values < 0, magnitude | identifier, magnitude)
    codes = xp.where(outlier, outlier_codes, normal_codes)
    pairs, length = _pairs(outlier, pair_axis, xp, False)
    partner_out = _unpairs(xp.flip(pairs, axis=-1), length, pair_axis, xp)
    return xp.where(partner_out & ~outlier, identifier, codes)


# ---------------------------------------------------------------------------------------------
# Packing: two 4-bit codes per byte, element 2j in the low nibble and 2j+1 in the high nibble.


def pack_int4(codes, axis: int = -1):
    """Pack 4-bit codes (0..15) two per uint8 along `axis`; an odd length is padded with code 0.

    Code 0 decodes to zero for every type, so the padding is harmless in a matmul.
    """
    xp = _namespace(codes)
    codes = xp.asarray(codes)
    if not xp.issubdtype(codes.dtype, xp.integer):
        raise TypeError(f"codes must be an integer array, got dtype {codes.dtype}")
    if codes.ndim == 0:
        raise ValueError("codes must have at least one dimension to pack along")
    if xp is np and codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError(f"codes must lie in 0..15 to pack two per byte, got {codes.min()}..{codes.max()}")
    codes = xp.moveaxis(codes.astype(xp.uint8), axis, -1)
    if codes.shape[-1] % 2:
        codes = xp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, 1)])
    packed = (codes[..., 0::2] & 0xF) | ((codes[..., 1::2] & 0xF) << 4)
    return xp.moveaxis(packed.astype(xp.uint8), -1, axis)


def unpack_int4(packed, axis: int = -1, size: int | None = None):
    """Inverse of :func:`pack_int4`: uint8 -> codes (uint8) with twice the length along `axis`.

    `size` trims the result to the original (odd) length.
    """
    xp = _namespace(packed)
    packed = xp.asarray(packed)
    if packed.dtype != xp.uint8:
        raise TypeError(f"packed must be a uint8 array, got dtype {packed.dtype}")
    packed = xp.moveaxis(packed, axis, -1)
    low, high = packed & 0xF, packed >> 4
    codes = xp.stack([low, high], axis=-1).reshape(packed.shape[:-1] + (2 * packed.shape[-1],))
    if size is not None:
        if not 0 <= size <= codes.shape[-1]:
            raise ValueError(f"size must be between 0 and {codes.shape[-1]}, got {size}")
        codes = codes[..., :size]
    return xp.moveaxis(codes, -1, axis)
