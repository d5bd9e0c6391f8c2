"""`jax.random` draws with the same values, generated as one flat vector so that XLA:CPU compiles them fast.

With JAX's default "partitionable" threefry (`jax_threefry_partitionable`, on since JAX 0.5) the counter
of each element is computed from its multi-dimensional index, and XLA:CPU compiles that index arithmetic
slowly once an array has two or more axes. Measured here (JAX 0.10.2, XLA:CPU, 2-core AMD EPYC): the
first `jax.random.normal(key, (3, 3, 4, 8))` takes 2.8 s and the same 288 values drawn as `(288,)` take
0.18 s; a (64, 10) matrix 0.97 s against 0.2 s; inside a jitted step, adding `normal(key, x.shape)` noise
to an (8, 32, 32, 3) batch costs 1.0 to 1.6 s of compilation against 0.18 s. Every distinct shape pays
again, in every process.

The values do not change: under both settings of `jax_threefry_partitionable` the counter of an element
is its row-major flat index, so `jax.random.normal(key, (n,)).reshape(shape)` equals
`jax.random.normal(key, shape)` bit for bit. `tests/test_prng.py` checks each function here against
`jax.random` on the same keys, so seeds, checkpoints and published numbers stay what they were.

Only on CPU: on GPU and TPU the draw goes to `jax.random` as is, because there the compile is not slow
and the multi-dimensional counters are what lets XLA's SPMD partitioner split a draw across a mesh
instead of replicating it (the values are the same either way).

Bounds and probabilities must be scalars here (JAX's broadcasting of array bounds against `shape` is
not reproduced); pass arrays to `jax.random` directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _shape(shape: Sequence[int], fn: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError as err:
        raise TypeError(f"{fn}: shape={shape!r} must be a sequence of ints") from err
    if any(d < 0 for d in shape):
        raise ValueError(f"{fn}: shape={shape} has a negative size")
    return shape


def _scalar(value, name: str, fn: str):
    if np.ndim(value) != 0:
        raise ValueError(
            f"{fn}: {name} has shape {np.shape(value)}; only a scalar is supported here, "
            f"use jax.random.{fn} for bounds that broadcast"
        )
    return value


def _draw(fn, key, shape: tuple[int, ...], *args, **kwargs) -> jax.Array:
    """fn(key, shape, ...) drawn flat and reshaped on CPU, drawn as is elsewhere (same values)."""
    if jax.default_backend() != "cpu":
        return fn(key, shape, *args, **kwargs)
    return fn(key, (math.prod(shape),), *args, **kwargs).reshape(shape)


def normal(key: jax.Array, shape: Sequence[int] = (), dtype=jnp.float32) -> jax.Array:
    """`jax.random.normal(key, shape, dtype)`, same values."""
    shape = _shape(shape, "normal")
    return _draw(jax.random.normal, key, shape, dtype)


def uniform(key: jax.Array, shape: Sequence[int] = (), dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """`jax.random.uniform(key, shape, dtype, minval, maxval)` for scalar bounds, same values."""
    shape = _shape(shape, "uniform")
    minval, maxval = _scalar(minval, "minval", "uniform"), _scalar(maxval, "maxval", "uniform")
    return _draw(jax.random.uniform, key, shape, dtype, minval, maxval)


def truncated_normal(key: jax.Array, lower, upper, shape: Sequence[int] = (), dtype=jnp.float32) -> jax.Array:
    """`jax.random.truncated_normal(key, lower, upper, shape, dtype)` for scalar bounds, same values."""
    shape = _shape(shape, "truncated_normal")
    lower, upper = _scalar(lower, "lower", "truncated_normal"), _scalar(upper, "upper", "truncated_normal")
    return _draw(lambda k, s: jax.random.truncated_normal(k, lower, upper, s, dtype), key, shape)


def bernoulli(key: jax.Array, p, shape: Sequence[int]) -> jax.Array:
    """`jax.random.bernoulli(key, p, shape)` for a scalar probability, same values."""
    shape = _shape(shape, "bernoulli")
    p = _scalar(p, "p", "bernoulli")
    return _draw(lambda k, s: jax.random.bernoulli(k, p, s), key, shape)


def randint(key: jax.Array, shape: Sequence[int], minval, maxval, dtype=jnp.int32) -> jax.Array:
    """`jax.random.randint(key, shape, minval, maxval, dtype)` for scalar bounds, same values."""
    shape = _shape(shape, "randint")
    minval, maxval = _scalar(minval, "minval", "randint"), _scalar(maxval, "maxval", "randint")
    return _draw(jax.random.randint, key, shape, minval, maxval, dtype)
