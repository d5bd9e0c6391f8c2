"""frugal.transforms.initializers draws flat but must give JAX's and Flax's values bit for bit.

The reference is JAX's own initializers on the same key and shape. Shapes are small so that the
references compile quickly; ranks 1 to 4 and non-default axes are covered.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.transforms import initializers as fi

SHAPES = [(2, 3), (3, 3, 2, 4)]


def _same(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("distribution", fi.DISTRIBUTIONS)
@pytest.mark.parametrize("mode", fi.MODES)
def test_variance_scaling_equals_jax_for_every_mode_and_distribution(mode, distribution):
    key = jax.random.key(3)
    for shape in SHAPES:
        ours = fi.variance_scaling(1.7, mode, distribution)(key, shape)
        _same(ours, jax.nn.initializers.variance_scaling(1.7, mode, distribution)(key, shape))


def test_axes_dtypes_and_named_initializers_equal_jax():
    key = jax.random.key(11)
    shape = (2, 3, 4)
    vs = jax.nn.initializers.variance_scaling
    cases = [
        (
            fi.variance_scaling(2.0, "fan_out", "normal", in_axis=0, out_axis=(1, 2)),
            vs(2.0, "fan_out", "normal", 0, (1, 2)),
        ),
        (fi.variance_scaling(1.0, "fan_in", "normal", -1, 0, 1), vs(1.0, "fan_in", "normal", -1, 0, 1)),
        (fi.lecun_normal(), jax.nn.initializers.lecun_normal()),
        (fi.he_normal(), jax.nn.initializers.he_normal()),
        (fi.glorot_uniform(), jax.nn.initializers.glorot_uniform()),
        (fi.normal(0.02), jax.nn.initializers.normal(0.02)),
    ]
    for ours, ref in cases:
        _same(ours(key, shape), ref(key, shape))
        _same(ours(key, shape, jnp.bfloat16), ref(key, shape, jnp.bfloat16))
    # A vector: normal() accepts any rank; complex dtypes go to JAX's own initializer.
    _same(fi.normal(0.5)(key, (7,)), jax.nn.initializers.normal(0.5)(key, (7,)))
    _same(fi.lecun_normal()(key, (2, 3), jnp.complex64), jax.nn.initializers.lecun_normal()(key, (2, 3), jnp.complex64))


def test_equal_under_both_threefry_settings():
    key = jax.random.key(5)
    with jax.threefry_partitionable(False):
        _same(fi.lecun_normal()(key, (3, 3, 2, 4)), jax.nn.initializers.lecun_normal()(key, (3, 3, 2, 4)))


def test_layers_keep_flax_classes_and_default_values():
    ours = [
        fi.Conv(2, 3, (3, 3), rngs=nnx.Rngs(0)),
        fi.ConvTranspose(2, 3, (2, 2), rngs=nnx.Rngs(0)),
        fi.Linear(4, 3, rngs=nnx.Rngs(0)),
        fi.Embed(5, 3, rngs=nnx.Rngs(0)),
    ]
    flax = [
        nnx.Conv(2, 3, (3, 3), rngs=nnx.Rngs(0)),
        nnx.ConvTranspose(2, 3, (2, 2), rngs=nnx.Rngs(0)),
        nnx.Linear(4, 3, rngs=nnx.Rngs(0)),
        nnx.Embed(5, 3, rngs=nnx.Rngs(0)),
    ]
    for a, b in zip(ours, flax):
        assert type(a) is type(b)
        sa, sb = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
        for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
            _same(x, y)
    # An explicit initializer still wins over the default.
    zero = fi.Linear(4, 3, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(zero.kernel[...]))


def test_bad_arguments_name_what_is_allowed():
    with pytest.raises(ValueError, match="mode='fan_sum'.*fan_in"):
        fi.variance_scaling(1.0, "fan_sum", "normal")
    with pytest.raises(ValueError, match="distribution='cauchy'"):
        fi.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(ValueError, match="scale=0"):
        fi.variance_scaling(0, "fan_in", "normal")
    with pytest.raises(ValueError, match="stddev=-1"):
        fi.normal(-1)
    with pytest.raises(ValueError, match="shape=\\(4,\\).*in_axis"):
        fi.lecun_normal()(jax.random.key(0), (4,))
