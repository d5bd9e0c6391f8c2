"""Weight initializers and `flax.nnx` layers with JAX's and Flax's initial values, compiled fast.

Each initializer here equals its namesake in `jax.nn.initializers` bit for bit on the same key, shape
and dtype (`tests/test_initializers.py`), but draws through `frugal.transforms.prng`, i.e. as one flat
vector: with JAX's partitionable threefry XLA:CPU compiles a draw of rank >= 2 five to fifteen times
slower (see that module). A model initializes one kernel shape after another, so a CIFAR ResNet-8 spent
11 s of a 24 s `frugal train` command in JAX's initializers; checkpoints, seeds and published numbers do
not change.

`Conv`, `ConvTranspose`, `Linear` and `Embed` build the plain `nnx` classes with Flax's default
initializers replaced by these equal ones, so transforms that look for `nnx.Conv` or `nnx.Linear` see no
difference. Complex dtypes fall back to JAX's own initializers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.transforms import prng

Initializer = Callable[..., jax.Array]
Axes = int | Sequence[int]

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")

# Standard deviation of a standard normal truncated to (-2, 2): JAX divides by it so that the truncated
# draw has the requested variance.
_TRUNCATED_STD = 0.87962566103423978


def _size(shape: tuple[int, ...], axes: Axes) -> int:
    return shape[axes] if isinstance(axes, int) else math.prod(shape[i] for i in axes)


def _fans(shape: tuple[int, ...], in_axis: Axes, out_axis: Axes, batch_axis: Axes) -> tuple[float, float]:
    """(fan_in, fan_out) as `jax.nn.initializers.variance_scaling` counts them: the axes that are
    neither input, output nor batch form the receptive field."""
    if isinstance(in_axis, int) and in_axis == -2 and len(shape) < 2:
        raise ValueError(
            f"shape={shape} has {len(shape)} axes; the default in_axis=-2 needs at least 2, "
            "so pass in_axis (and out_axis) for this weight"
        )
    in_size, out_size, batch_size = _size(shape, in_axis), _size(shape, out_axis), _size(shape, batch_axis)
    receptive = math.prod(shape) / in_size / out_size / batch_size
    return in_size * receptive, out_size * receptive


def variance_scaling(
    scale: float,
    mode: str,
    distribution: str,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype=jnp.float32,
) -> Initializer:
    """`jax.nn.initializers.variance_scaling` with the same arguments and values, drawn flat.

    Draws with variance `scale / n`, where n is fan_in, fan_out, their mean or their geometric mean
    (`mode`), from a normal, a normal truncated to two standard deviations, or a uniform distribution.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a variance-scaling mode; use one of {MODES}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution={distribution!r} is not supported; use one of {DISTRIBUTIONS}")
    if not scale > 0:
        raise ValueError(f"scale={scale!r} must be positive")
    reference = jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype)

    def init(key: jax.Array, shape: Sequence[int], dtype=dtype) -> jax.Array:
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, np.floating):
            return reference(key, shape, dtype)
        shape = tuple(int(d) for d in shape)
        fan_in, fan_out = _fans(shape, in_axis, out_axis, batch_axis)
        denominator = {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": (fan_in * fan_out) ** 0.5,
        }[mode]
        variance = jnp.array(scale / denominator, dtype=dtype)
        if distribution == "truncated_normal":
            stddev = jnp.sqrt(variance) / jnp.array(_TRUNCATED_STD, dtype)
            return prng.truncated_normal(key, -2, 2, shape, dtype, scale=stddev)
        if distribution == "normal":
            return prng.normal(key, shape, dtype, scale=jnp.sqrt(variance))
        return prng.uniform(key, shape, dtype, -1, scale=jnp.sqrt(3 * variance))

    return init


def lecun_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=jnp.float32) -> Initializer:
    """LeCun normal (variance 1 / fan_in, truncated normal): Flax's default kernel initializer."""
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis, dtype)


def he_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=jnp.float32) -> Initializer:
    """He normal (variance 2 / fan_in, truncated normal), arXiv 1502.01852."""
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis, dtype)


def glorot_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=jnp.float32) -> Initializer:
    """Glorot / Xavier uniform (variance 2 / (fan_in + fan_out))."""
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis, batch_axis, dtype)


def normal(stddev: float = 1e-2, dtype=jnp.float32) -> Initializer:
    """`jax.nn.initializers.normal`: N(0, stddev^2) of any shape, drawn flat."""
    if not stddev > 0:
        raise ValueError(f"stddev={stddev!r} must be positive")

    def init(key: jax.Array, shape: Sequence[int], dtype=dtype) -> jax.Array:
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, np.floating):
            return jax.nn.initializers.normal(stddev, dtype)(key, shape, dtype)
        return prng.normal(key, shape, dtype, scale=jnp.array(stddev, dtype))

    return init


def Conv(*args, kernel_init: Initializer | None = None, **kwargs) -> nnx.Conv:
    """`nnx.Conv` with the same default (LeCun normal) kernel values, initialized fast."""
    return nnx.Conv(*args, kernel_init=kernel_init or lecun_normal(), **kwargs)


def ConvTranspose(*args, kernel_init: Initializer | None = None, **kwargs) -> nnx.ConvTranspose:
    """`nnx.ConvTranspose` with the same default (LeCun normal) kernel values, initialized fast."""
    return nnx.ConvTranspose(*args, kernel_init=kernel_init or lecun_normal(), **kwargs)


def Linear(*args, kernel_init: Initializer | None = None, **kwargs) -> nnx.Linear:
    """`nnx.Linear` with the same default (LeCun normal) kernel values, initialized fast."""
    return nnx.Linear(*args, kernel_init=kernel_init or lecun_normal(), **kwargs)


def Embed(*args, embedding_init: Initializer | None = None, **kwargs) -> nnx.Embed:
    """`nnx.Embed` with Flax's default table values (variance 1 / features, normal), initialized fast."""
    default = embedding_init or variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    return nnx.Embed(*args, embedding_init=default, **kwargs)
