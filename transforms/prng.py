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

Outside a trace (a model's initialization) a draw is taken at a bucket size (2**12, 2**16, 2**20 values,
or four significant bits above that) and cut on the host: with partitionable threefry element i depends
on the key and i alone, so the cut equals the exact draw, and all the layers of all the models in a process
share a handful of compiled draws. A CIFAR ResNet-8 initialized in 3.2 s with one draw program per
kernel shape and in 1.3 s with the buckets (same machine, fresh process). Under jit, or with the older
non-partitionable threefry, the draw has exactly the size asked for.

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


def _bucket(n: int) -> int:
    """The flat size drawn for `n` values outside a trace: 2**12, 2**16 or 2**20 up to those sizes (a
    draw that small costs well under a millisecond, its compilation a tenth of a second or more), above
    them `n` rounded up to four significant bits (at most 1/8 more values than asked for)."""
    for size in (1 << 12, 1 << 16, 1 << 20):
        if n <= size:
            return size
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


def _prefix_stable(key) -> bool:
    """Whether the first n values of a longer flat draw are the values of an n-value draw: true for
    partitionable threefry, whose element i depends on the key and i alone."""
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
        return False
    try:
        return "threefry" in str(jax.random.key_impl(key))
    except (TypeError, ValueError):
        return False


def _scale(scale, fn: str):
    return None if scale is None else _scalar(scale, "scale", fn)


def _draw(fn, key, shape: tuple[int, ...], *args, scale=None, **kwargs) -> jax.Array:
    """fn(key, shape, ...) (times `scale`, if given) drawn flat and reshaped on CPU, drawn as is elsewhere
    (same values).

    Outside a trace (initializing a model) the flat draw is also rounded up to a bucket size, scaled there
    and cut on the host, so the layers of every model in a process share a handful of compiled draws
    instead of one draw, one multiply and one reshape program per parameter shape. Inside jit the draw is
    part of the caller's program and stays exact."""
    if jax.default_backend() != "cpu":
        out = fn(key, shape, *args, **kwargs)
        return out if scale is None else out * scale
    n = math.prod(shape)
    if not _prefix_stable(key):
        out = fn(key, (n,), *args, **kwargs)
        return (out if scale is None else out * scale).reshape(shape)
    flat = fn(key, (_bucket(n),), *args, **kwargs)
    if scale is not None:
        flat = flat * scale
    return jnp.asarray(np.asarray(flat)[:n].reshape(shape))


def normal(key: jax.Array, shape: Sequence[int] = (), dtype=jnp.float32, *, scale=None) -> jax.Array:
    """`jax.random.normal(key, shape, dtype)` (times `scale` if given), same values."""
    shape = _shape(shape, "normal")
    return _draw(jax.random.normal, key, shape, dtype, scale=_scale(scale, "normal"))


def uniform(
    key: jax.Array, shape: Sequence[int] = (), dtype=jnp.float32, minval=0.0, maxval=1.0, *, scale=None
) -> jax.Array:
    """`jax.random.uniform(key, shape, dtype, minval, maxval)` for scalar bounds (times `scale` if given),
    same values."""
    shape = _shape(shape, "uniform")
    minval, maxval = _scalar(minval, "minval", "uniform"), _scalar(maxval, "maxval", "uniform")
    return _draw(jax.random.uniform, key, shape, dtype, minval, maxval, scale=_scale(scale, "uniform"))


def truncated_normal(
    key: jax.Array, lower, upper, shape: Sequence[int] = (), dtype=jnp.float32, *, scale=None
) -> jax.Array:
    """`jax.random.truncated_normal(key, lower, upper, shape, dtype)` for scalar bounds (times `scale` if
    given), same values."""
    shape = _shape(shape, "truncated_normal")
    lower, upper = _scalar(lower, "lower", "truncated_normal"), _scalar(upper, "upper", "truncated_normal")
    draw = lambda k, s: jax.random.truncated_normal(k, lower, upper, s, dtype)
    return _draw(draw, key, shape, scale=_scale(scale, "truncated_normal"))


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
