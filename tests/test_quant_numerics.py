"""ANT numeric types: grids against the reference generators, bit-level codec, packing, quantizer."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.transforms.quant import (
    KINDS,
    NumericType,
    decode,
    decode_parts,
    encode,
    normalized_grid,
    pack_int4,
    quantize,
    quantize_to_codes,
    unpack_int4,
    value_grid,
)

ALL_TYPES = [
    NumericType(kind, bits, signed) for kind, bits, signed in itertools.product(KINDS, range(2, 9), (False, True))
]


# --- An independent port of the reference generators (clevercool/ANT-Quantization,
# antquant/quant_modules.py: int_value, pot_value, float_value(eb=3), flint_value), written as
# enumerations rather than codecs, so they check our bit-level decoder.


def reference_grid(kind: str, bits: int, signed: bool) -> np.ndarray:
    b = bits - 1 if signed else bits
    values = [0.0]

    def add(v):
        values.append(v)
        if signed:
            values.append(-v)

    if kind == "int":
        for i in range(1, 2**b):
            add(float(i))
        if signed:
            values.append(-(2.0**b))
    elif kind == "pot":
        for i in range(0, 2**b - 1):
            add(2.0**i)
    elif kind == "float":
        exp_bit = 2 if b == 2 else 3
        man_bit = b - exp_bit
        first = True
        for i in range(2**exp_bit):
            for j in range(2**man_bit):
                if first:
                    first = False
                elif i == 0:
                    add((2.0**i) * (j * 2.0**-man_bit))
                else:
                    add((2.0 ** (i - 1)) * (1 + j * 2.0**-man_bit))
    elif kind == "flint":
        for i in range(0, b):
            exp_bit = i + 2
            mant_bit = b - exp_bit
            for j in range(int(2**mant_bit) if mant_bit >= 0 else 0):
                add(2.0 ** -(exp_bit - 1) * (1 + 2.0**-mant_bit * j))
        for j in range(2 ** (b - 2)):
            add(1 + 2.0 ** -(b - 2) * j)
        for i in range(1, b - 1):
            mant_bit = b - i - 2
            for j in range(2**mant_bit):
                add(2.0**i * (1 + 2.0**-mant_bit * j))
        add(2.0 ** (b - 1))
    if len(values) < 2**bits:
        values.append(0.0)
    assert len(values) == 2**bits
    values = np.sort(np.array(values))
    return values * (10.0 / values.max())  # the reference's arbitrary scale


def _reference_exists(kind, bits, signed):
    b = bits - 1 if signed else bits
    return not (kind in ("float", "flint") and b < 2)  # the reference asserts / breaks there


def test_golden_4bit_grids_from_the_issue():
    np.testing.assert_array_equal(
        value_grid("flint", 4, signed=False),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 24, 32, 64],
    )
    half = np.array([0, 1, 2, 3, 4, 6, 8, 16])
    np.testing.assert_array_equal(value_grid("flint", 4, signed=True), np.union1d(-half, half))
    np.testing.assert_array_equal(value_grid("float", 4, signed=True), value_grid("pot", 4, signed=True))
    np.testing.assert_array_equal(value_grid("int", 4, signed=True), np.arange(-8, 8))
    # E3M1 unsigned: 0, 0.5, 1, 1.5, 2, 3, 4, 6, ..., 64, 96 up to scale.
    e3m1 = value_grid("float", 4, signed=False) / 2
    np.testing.assert_array_equal(e3m1[:8], [0, 0.5, 1, 1.5, 2, 3, 4, 6])
    assert e3m1[-2:].tolist() == [64, 96]


@pytest.mark.parametrize("ntype", ALL_TYPES, ids=lambda t: t.name)
def test_grid_equals_reference_up_to_scale(ntype):
    if not _reference_exists(ntype.kind, ntype.bits, ntype.signed):
        pytest.skip("the reference has no such grid")
    if ntype.kind == "pot" and ntype.bits == 8 and not ntype.signed:
        pytest.skip("reference grid spans 2**254, beyond its float32 tensors")
    ours = ntype.grid
    ref = np.unique(reference_grid(ntype.kind, ntype.bits, ntype.signed))
    np.testing.assert_allclose(ours / ours.max(), ref / ref.max(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("ntype", ALL_TYPES, ids=lambda t: t.name)
def test_encode_decode_round_trip_every_code(ntype):
    codes = np.arange(ntype.num_codes)
    values = decode(codes, ntype)
    np.testing.assert_array_equal(encode(values, ntype), codes)
    integer, shift = decode_parts(codes, ntype)
    np.testing.assert_array_equal(np.ldexp(integer.astype(np.float64), shift), values)
    # Every value is a small integer times a power of two: the integer fits the value bits.
    assert np.abs(integer).max() < 2 ** (ntype.value_bits + (ntype.kind == "int" and ntype.signed))
    # Distinct values: all codes except the signed negative zero.
    expected = ntype.num_codes - (ntype.signed and ntype.kind != "int")
    assert len(ntype.grid) == expected


# The NumPy round trip above covers every width; the float32/JAX path is checked at a few.
JAX_TYPES = [t for t in ALL_TYPES if t.bits in (2, 4, 7) or (t.bits == 8 and t.signed)]


@jax.jit
def _jax_round_trips():
    # One trace for every type keeps this to a single compile.
    return [encode(decode(jnp.arange(t.num_codes, dtype=jnp.int32), t), t) for t in JAX_TYPES], [
        decode(jnp.arange(t.num_codes, dtype=jnp.int32), t) for t in JAX_TYPES
    ]


def test_round_trip_under_jit_float32():
    codes, values = _jax_round_trips()
    for t, c, v in zip(JAX_TYPES, codes, values):
        np.testing.assert_array_equal(c, np.arange(t.num_codes), err_msg=t.name)
        np.testing.assert_array_equal(v, decode(np.arange(t.num_codes), t).astype(np.float32), err_msg=t.name)


def test_flint_code_layout_matches_leading_one_encoding():
    t = NumericType("flint", 4, False)
    # MSB 0: plain integers; 10mm -> 8 + 2m; 110m -> 16 + 8m; 1110 -> 32; 1111 -> 64.
    expected = list(range(8)) + [8, 10, 12, 14, 16, 24, 32, 64]
    np.testing.assert_array_equal(decode(np.arange(16), t), expected)
    assert decode(np.array([0b1000]), NumericType("flint", 4, True))[0] == 0.0
    assert np.signbit(decode(np.array([0b1000]), NumericType("flint", 4, True))[0])
    assert encode(np.array([-0.0]), NumericType("pot", 4, True))[0] == 0b1000


def test_float_exponent_bits_configurable():
    e2m1 = NumericType("float", 4, True, exponent_bits=2)
    assert e2m1.mantissa_bits == 1
    np.testing.assert_array_equal(value_grid("float", 4, signed=True, exponent_bits=2)[7:], [0, 1, 2, 3, 4, 6, 8, 12])
    assert NumericType("float", 4, True) == NumericType("float", 4, True, exponent_bits=3)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=33), st.integers(1, 3))
def test_pack_unpack_round_trip(codes, rows):
    arr = np.tile(np.array(codes, np.int64), (rows, 1))
    packed = pack_int4(arr)
    assert packed.dtype == np.uint8 and packed.shape == (rows, (len(codes) + 1) // 2)
    np.testing.assert_array_equal(unpack_int4(packed, size=len(codes)), arr)
    np.testing.assert_array_equal(pack_int4(arr.T, axis=0), packed.T)
    assert packed[0, 0] == (codes[0] | ((codes[1] if len(codes) > 1 else 0) << 4))


def test_pack_jax_matches_numpy():
    codes = np.random.default_rng(3).integers(0, 16, size=(3, 7))
    packed = pack_int4(codes, axis=1)
    np.testing.assert_array_equal(np.asarray(pack_int4(jnp.asarray(codes), axis=1)), packed)
    np.testing.assert_array_equal(np.asarray(unpack_int4(jnp.asarray(packed), axis=1, size=7)), codes)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: value_grid("int", 1, signed=True), ValueError),
        (lambda: value_grid("int", 9, signed=False), ValueError),
        (lambda: value_grid("int", True, signed=False), TypeError),
        (lambda: value_grid("int", 4.0, signed=False), TypeError),
        (lambda: value_grid("posit", 4, signed=True), ValueError),
        (lambda: NumericType("int", 4, True, exponent_bits=2), ValueError),
        (lambda: NumericType("float", 4, True, exponent_bits=4), ValueError),
        (lambda: NumericType("int", 4, "yes"), TypeError),
        (lambda: encode(np.array([5.0]), NumericType("pot", 4, False)), ValueError),
        (lambda: encode(np.array([100.0]), NumericType("int", 4, False)), ValueError),
        (lambda: decode(np.array([16]), NumericType("int", 4, False)), ValueError),
        (lambda: decode(np.array([1.0]), NumericType("int", 4, False)), TypeError),
        (lambda: pack_int4(np.array([16])), ValueError),
        (lambda: unpack_int4(np.array([1], np.int32)), TypeError),
        (lambda: quantize(jnp.ones(3), "int", 1.0), TypeError),
        (lambda: quantize(jnp.ones((2, 3)), NumericType("int", 4, True), jnp.ones(2), axis=1), ValueError),
        (lambda: quantize(jnp.ones((2, 3)), NumericType("int", 4, True), jnp.ones(3)), ValueError),
    ],
)
def test_bad_input_raises(call, error):
    with pytest.raises(error):
        call()


# --- quantizer


def brute_force_quantize(x, ntype, alpha):
    """The reference's CUDA kernel in float32: a linear scan over the ascending grid where `<=`
    keeps the last of equal distances (ties go to the larger value)."""
    grid = normalized_grid(ntype)
    v = np.asarray(x, np.float32) / np.float32(alpha)
    distance = np.abs(v[:, None] - grid[None, :])
    last_best = len(grid) - 1 - np.argmin(distance[:, ::-1], axis=1)
    return grid[last_best] * np.float32(alpha)


_quantize_jit = jax.jit(quantize, static_argnums=1, static_argnames=("axis", "pair_axis"))
_codes_jit = jax.jit(quantize_to_codes, static_argnums=1, static_argnames=("axis", "pair_axis"))


@pytest.mark.parametrize(
    "ntype",
    [NumericType(k, b, s) for k in KINDS for b, s in ((4, True), (4, False), (3, True), (6, False))],
    ids=lambda t: t.name,
)
def test_quantize_matches_nearest_grid_scan(ntype):
    rng = np.random.default_rng(ntype.bits * 7 + ntype.signed)
    x = rng.laplace(size=200).astype(np.float32)
    if not ntype.signed:
        x = np.abs(x)
    alpha = 0.8 * float(np.max(np.abs(x)))
    ours = np.asarray(_quantize_jit(jnp.asarray(x), ntype, alpha))
    np.testing.assert_allclose(ours, brute_force_quantize(x, ntype, alpha), rtol=2e-6, atol=1e-7)


def test_ties_go_to_the_larger_value():
    # Signed flint-4 has max 16, so alpha = 16 keeps every value and midpoint exact in float32.
    t = NumericType("flint", 4, True)
    x = jnp.array([0.5, 1.5, -0.5, -1.5, 5.0, 7.0, 12.0, -12.0, 20.0, -20.0])
    out = np.asarray(quantize(x, t, 16.0))
    np.testing.assert_array_equal(out, [1, 2, 0, -1, 6, 8, 16, -8, 16, -16])


def test_quantize_gradients_are_ste_and_lsq_like():
    t = NumericType("flint", 4, True)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)) * 2.0
    alpha = jnp.float32(1.7)
    upstream = jnp.arange(30, dtype=jnp.float32).reshape(6, 5) / 30.0
    gx, ga = jax.grad(lambda x, a: jnp.sum(quantize(x, t, a) * upstream), argnums=(0, 1))(x, alpha)
    np.testing.assert_allclose(gx, upstream, rtol=1e-6)  # identity STE, no clipping mask
    q = np.asarray(quantize(x, t, alpha)) / 1.7
    expected = np.sum((q - np.asarray(x) / 1.7) * np.asarray(upstream))
    np.testing.assert_allclose(ga, expected, rtol=1e-4, atol=1e-5)


def test_per_channel_alpha_and_codes():
    t = NumericType("int", 4, True)
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 4)).astype(np.float32) * np.array([1, 10, 0.1, 3], np.float32)
    alpha = np.abs(w).max(axis=0)
    out = np.asarray(_quantize_jit(jnp.asarray(w), t, jnp.asarray(alpha), axis=-1))
    for c in range(4):
        np.testing.assert_allclose(out[:, c], brute_force_quantize(w[:, c], t, alpha[c]), rtol=2e-6, atol=1e-7)
    codes, scale = _codes_jit(jnp.asarray(w), t, jnp.asarray(alpha), axis=1)
    assert codes.dtype == jnp.int32 and int(codes.max()) < 16 and int(codes.min()) >= 0
    np.testing.assert_allclose(np.asarray(decode(codes, t) * scale), out, rtol=1e-6, atol=1e-7)
    # Per-channel gradient to alpha has one entry per channel.
    ga = jax.grad(lambda a: jnp.sum(quantize(jnp.asarray(w), t, a, axis=1)))(jnp.asarray(alpha))
    assert ga.shape == (4,)


# --- OliVe outlier-victim pairs (beyond the ANT paper)


def reference_olive_grid(normal: str, bits: int) -> np.ndarray:
    """Port of the OliVe reference (olive_quantization/antquant/quant_modules.py), signed: normal
    int/flint grids scaled to a normal maximum of 28/32, plus abfloat outliers (exp_bit 2, base 5)."""
    b = bits - 1
    if normal == "int":
        values = [0.0] + [s * i for i in range(1, 2**b) for s in (1, -1)]
        values = np.array(values) * 32 / 2**b
    else:
        values = reference_grid("flint", bits, True)
        values = values / values.max() * 32
    m = b - 2
    outliers = [
        s * 2.0**i * (1 + 2.0**-m * j)
        for i in range(5, 9)
        for j in range(2**m)
        if not (i == 5 and j == 0)
        for s in (1, -1)
    ]
    return np.unique(np.concatenate([values, outliers]))


def reference_victims(q):
    """The reference's torch.roll pair rule on a flat even-length array, in NumPy."""
    mask = np.abs(q) > 32
    victim_odd = np.roll(mask, 1)
    victim_odd[::2] = False
    victim_even = np.roll(mask & ~victim_odd, -1)
    victim_even[1::2] = False
    return q * ~(victim_even | victim_odd)


@pytest.mark.parametrize("kind, normal", [("olive", "flint"), ("olive-int", "int")])
@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_olive_grid_equals_reference_up_to_scale(kind, normal, bits):
    t = NumericType(kind, bits, True)
    ref = reference_olive_grid(normal, bits)
    ref_normal_max = 32.0 if normal == "flint" else (2 ** (bits - 1) - 1) * 32 / 2 ** (bits - 1)
    np.testing.assert_allclose(t.grid / t.clip_value, ref / ref_normal_max, rtol=1e-12)
    assert np.all(t.grid == np.round(t.grid))  # integer scale


@pytest.mark.parametrize(
    "t",
    [
        NumericType("olive", 4, True),
        NumericType("olive-int", 4, True),
        NumericType("olive", 3, True),
        NumericType("olive-int", 6, True),
    ],
    ids=lambda t: t.name,
)
def test_olive_pair_codes_round_trip(t):
    n, identifier = t.num_codes, 1 << t.value_bits
    pairs = np.array([(a, c) for a in range(n) for c in range(n)])
    # Invalid pairs: two identifiers, or an outlier code whose abfloat magnitude field is 0.
    valid = ~((pairs[:, 0] == identifier) & (pairs[:, 1] == identifier))
    for own, partner in ((0, 1), (1, 0)):
        valid &= ~((pairs[:, partner] == identifier) & ((pairs[:, own] & (identifier - 1)) == 0))
    pairs = pairs[valid]
    values = decode(pairs, t)
    np.testing.assert_array_equal(encode(values, t), pairs)
    assert set(np.unique(values)) == set(t.grid)
    # An outlier's partner is always 0; a pair never holds two outliers.
    outlier = np.abs(values) > t.clip_value
    assert not np.any(outlier[:, 0] & outlier[:, 1])
    assert np.all(values[outlier[:, ::-1]] == 0)


def test_olive_quantizer_matches_reference_victim_rule():
    t = NumericType("olive", 4, True)
    x = np.random.default_rng(5).standard_t(2, size=(6, 16)).astype(np.float32)
    alpha = 2.0
    ours = np.asarray(_quantize_jit(jnp.asarray(x), t, alpha))
    # Reference: nearest over the union grid (scale alpha / 32), then the roll-based victim rule.
    scaled = reference_olive_grid("flint", 4)
    v = x.reshape(-1) / np.float32(alpha / 32)
    distance = np.abs(v[:, None] - scaled[None, :])
    q = scaled[len(scaled) - 1 - np.argmin(distance[:, ::-1], axis=1)]
    expected = reference_victims(q) * (alpha / 32)
    np.testing.assert_allclose(ours.reshape(-1), expected, rtol=1e-6, atol=1e-7)
    assert np.any(np.abs(ours) > alpha)  # some outliers were kept
    codes, scale = _codes_jit(jnp.asarray(x), t, alpha)
    np.testing.assert_allclose(decode(np.asarray(codes), t) * float(scale), ours, rtol=1e-6)
    # Pairs along axis 0 instead: the victims differ, the codec follows the same axis.
    along0 = np.asarray(_quantize_jit(jnp.asarray(x), t, alpha, pair_axis=0))
    codes0, _ = _codes_jit(jnp.asarray(x), t, alpha, pair_axis=0)
    np.testing.assert_allclose(decode(np.asarray(codes0), t, pair_axis=0) * float(scale), along0, rtol=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: NumericType("olive", 4, False),
        lambda: NumericType("olive", 2, True),
        lambda: encode(np.array([24.0, 1.0]), NumericType("olive", 4, True)),  # partner not 0
        lambda: encode(np.array([24.0, 32.0]), NumericType("olive", 4, True)),  # two outliers
        lambda: decode_parts(np.array([1]), NumericType("olive", 4, True)),
    ],
)
def test_olive_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_bfloat16_input_rounds_in_float32_and_keeps_its_dtype():
    t = NumericType("flint", 8, True)
    x = jnp.linspace(-3, 3, 64, dtype=jnp.bfloat16)
    out = _quantize_jit(x, t, 3.0)
    assert out.dtype == jnp.bfloat16
    expected = brute_force_quantize(np.asarray(x, np.float32), t, 3.0)
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, rtol=1e-2)


def test_quantize_under_vmap_matches_a_loop():
    t = NumericType("int", 4, True)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 10)).astype(np.float32))
    alphas = jnp.array([0.5, 1.0, 2.0])
    batched = jax.jit(jax.vmap(lambda row, a: quantize(row, t, a)))(x, alphas)
    for i in range(3):
        np.testing.assert_allclose(batched[i], quantize(x[i], t, alphas[i]), rtol=1e-6)
