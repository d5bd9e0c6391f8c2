"""AQuant's learned rounding border (frugal.transforms.quant.aquant) against plain NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.transforms.quant import NumericType, round_to_grid
from frugal.transforms.quant.aquant import (
    BORDER_MARGIN,
    GRANULARITIES,
    activation_codes,
    border_from_logits,
    border_table_shape,
    calibrate_activation,
    fake_quant_activation,
    grid_spec,
    init_border_logits,
    lookup_border,
)

INT2, INT3, INT4 = (grid_spec("int", b) for b in (2, 3, 4))
FLINT4 = grid_spec("flint", 4, signed=False)


@jax.jit
def _rtn_int4(x):
    return fake_quant_activation(x, 1.0, 0.0, INT4)


@jax.jit
def _border_int4(x, logits):
    return fake_quant_activation(x, 1.0, 0.0, INT4, logits)


@jax.jit
def _flint(x):
    return fake_quant_activation(x, 1.0, 0.0, FLINT4)


def _half_up_reference(u, grid):
    """Round-to-nearest, ties up, computed in float64, clipped to the grid."""
    return np.clip(np.floor(np.asarray(u, np.float64) + 0.5), grid.values[0], grid.values[-1])


grid_floats = st.one_of(
    st.floats(-3.0, 20.0, width=32),
    st.integers(-3, 20).map(lambda k: k + 0.5),  # exact ties
    st.integers(-3, 20).map(lambda k: float(np.nextafter(np.float32(k + 0.5), np.float32(-np.inf)))),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(grid_floats, min_size=1, max_size=24))
def test_border_half_everywhere_is_round_to_nearest_exactly(values):
    x = jnp.asarray(np.asarray(values, np.float32)).reshape(-1, 1)
    expected = _half_up_reference(np.asarray(x), INT4)
    np.testing.assert_array_equal(np.asarray(_rtn_int4(x)), expected)
    # Zero logits (border exactly 0.5) at every granularity give the same bits.
    for granularity in GRANULARITIES:
        logits = init_border_logits(granularity, 1, INT4.num_gaps)
        np.testing.assert_array_equal(np.asarray(_border_int4(x, logits)), expected)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_zero_logits_match_nearest_with_any_scale_and_offset(granularity):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 5, 6)) * 3.0
    scale, offset = jnp.float32(0.37), jnp.float32(5.0)
    logits = init_border_logits(granularity, 6, INT3.num_gaps)
    fq = jax.jit(lambda x, l: fake_quant_activation(x, scale, offset, INT3, l))
    np.testing.assert_array_equal(np.asarray(fq(x, logits)), np.asarray(fq(x, None)))
    assert border_table_shape(granularity, 6, 7) == logits.shape


def test_borders_stay_inside_zero_one_even_when_logits_saturate():
    theta = jnp.asarray([-1e30, -1e4, -20.0, -1.0, 0.0, 1.0, 20.0, 1e4, 1e30], jnp.float32)
    b = np.asarray(border_from_logits(theta))
    assert np.all(b > 0.0) and np.all(b < 1.0)
    assert b.min() >= BORDER_MARGIN - 1e-7 and b.max() <= 1.0 - BORDER_MARGIN + 1e-7
    assert b[4] == 0.5
    assert np.all(np.diff(b) >= 0)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_learned_border_rounds_by_channel_and_level_table(granularity):
    rng = np.random.default_rng(1)
    channels = 3
    logits = jnp.asarray(rng.normal(size=border_table_shape(granularity, channels, INT2.num_gaps)), jnp.float32)
    u = rng.uniform(-1.0, 4.5, size=(50, channels)).astype(np.float32)
    got = np.asarray(jax.jit(lambda u, l: fake_quant_activation(u, 1.0, 0.0, INT2, l))(u, logits))
    table = np.asarray(border_from_logits(logits))
    expected = np.empty_like(u)
    for i in range(u.shape[0]):
        for c in range(channels):
            k = int(np.clip(np.floor(u[i, c]), 0, INT2.num_gaps - 1))
            b = table[c if table.shape[0] > 1 else 0, k if table.shape[1] > 1 else 0]
            expected[i, c] = k + 1 if u[i, c] - k >= b else k
    np.testing.assert_array_equal(got, expected)
    codes = np.asarray(activation_codes(u, 1.0, 0.0, INT2, logits))
    np.testing.assert_array_equal(codes, expected.astype(np.int32))


def test_lookup_border_uses_the_channel_axis():
    table = jnp.asarray([[0.1], [0.9]])
    k = jnp.zeros((2, 3), jnp.int32)
    np.testing.assert_allclose(np.asarray(lookup_border(table, k, channel_axis=0)), [[0.1] * 3, [0.9] * 3])
    with pytest.raises(ValueError, match="channels"):
        lookup_border(table, k, channel_axis=-1)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-2.0, 80.0, width=32), st.sampled_from([0.5, 7.5, 9.0, 12.0, 20.0, 48.0])),
        min_size=1,
        max_size=24,
    )
)
def test_non_uniform_ant_grid_at_half_border_matches_ant_nearest_rounding(values):
    # The ANT quantizer (another implementation) rounds to the nearest grid value, ties up.
    x = jnp.asarray(np.asarray(values, np.float32))
    expected = np.asarray(round_to_grid(x, NumericType("flint", 4, False).grid.astype(np.float32)))
    np.testing.assert_array_equal(np.asarray(_flint(x)), expected)


def test_gradients_ste_lsq_and_border_sign():
    x = jnp.linspace(-2.0, 6.0, 101)
    g = jax.grad(lambda x: jnp.sum(fake_quant_activation(x, 1.0, 0.0, INT2)))(x)
    inside = (x >= 0) & (x <= 3)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(inside, np.float32))  # STE inside, 0 outside
    # LSQ scale gradient: q - u inside the range.
    gs = jax.grad(lambda s: jnp.sum(fake_quant_activation(jnp.asarray([1.3]), s, 0.0, INT2)))(1.0)
    np.testing.assert_allclose(float(gs), 1.0 - 1.3, rtol=1e-5)
    # Raising a border can only lower values: the border gradient of the sum is <= 0, and nonzero.
    logits = init_border_logits("level", 1, INT2.num_gaps)
    gb = jax.grad(lambda l: jnp.sum(fake_quant_activation(x, 1.0, 0.0, INT2, l)))(logits)
    assert np.all(np.asarray(gb) <= 0) and np.any(np.asarray(gb) < 0)


def test_calibration_and_grid_errors():
    x = jnp.abs(jax.random.normal(jax.random.PRNGKey(2), (256,)))
    scale, offset = calibrate_activation(x, INT4)
    assert float(offset) == 0.0 and float(scale) > 0  # non-negative data: zero point at level 0
    err = jnp.mean((fake_quant_activation(x, scale, offset, INT4) - x) ** 2)
    naive = jnp.mean((fake_quant_activation(x, jnp.max(x) / 15, 0.0, INT4) - x) ** 2)
    assert float(err) <= float(naive)
    with pytest.raises(ValueError, match="bits"):
        grid_spec("int", 1)
    with pytest.raises(ValueError, match="bits"):
        grid_spec("int", 9)
    with pytest.raises(ValueError, match="kind"):
        grid_spec("nf4", 4)
    with pytest.raises(ValueError, match="granularity"):
        border_table_shape("pixel", 4, 3)
    with pytest.raises(ValueError, match="empty"):
        calibrate_activation(jnp.zeros((0,)), INT4)
