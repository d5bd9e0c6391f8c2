"""Public entry points refuse values that used to give silent garbage (zeros, NaN), naming the
argument; traced values that cannot be checked at trace time get the documented positive floor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.transforms.block_skim import block_labels
from frugal.transforms.quant import NumericType, quantize, quantize_to_codes
from frugal.transforms.quant.aquant import activation_codes, calibrate_activation, fake_quant_activation, grid_spec

INT4 = NumericType("int", 4, True)
x = jnp.linspace(-2.0, 2.0, 9)


@pytest.mark.parametrize("alpha", [0.0, -1.0, np.nan, np.inf, np.array([1.0, 0.0, 2.0])])
def test_quantize_refuses_a_non_positive_clip_value(alpha):
    data = jnp.ones((4, 3))
    axis = None if np.ndim(alpha) == 0 else 1
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        quantize(data, INT4, alpha, axis=axis)
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        quantize_to_codes(data, INT4, alpha, axis=axis)


def test_traced_clip_value_has_a_positive_floor():
    """Under jit a collapsed alpha cannot be refused; the output is ~0 and finite, never NaN."""
    out = jax.jit(lambda a: quantize(x, INT4, a))(0.0)
    assert np.all(np.isfinite(np.asarray(out))) and np.abs(np.asarray(out)).max() < 1e-20


def test_activation_quantizer_refuses_zero_scale_and_floors_a_traced_one():
    grid = grid_spec("int", 4)
    for fn in (fake_quant_activation, activation_codes):
        with pytest.raises(ValueError, match="scale must be finite and > 0"):
            fn(x, 0.0, 0.0, grid)
    out = jax.jit(lambda s: fake_quant_activation(x, s, 0.0, grid))(0.0)
    assert np.all(np.isfinite(np.asarray(out)))


def test_calibration_refuses_nan_samples():
    with pytest.raises(ValueError, match="NaN or inf"):
        calibrate_activation(jnp.array([0.1, jnp.nan, 0.3]), grid_spec("int", 4))


def test_block_labels_refuses_a_span_that_ends_before_it_starts():
    with pytest.raises(ValueError, match=r"start_positions\[1\]=40 > end_positions\[1\]=33"):
        block_labels(np.array([3, 40]), np.array([5, 33]), 64)
    labels = block_labels(np.array([3, 0]), np.array([5, 0]), 64)  # 0/0: no answer in the window
    np.testing.assert_array_equal(np.asarray(labels), [[1, 0], [0, 0]])
