"""frugal.transforms.prng draws flat; each draw must equal jax.random's bit for bit on the same key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.transforms import prng

SHAPES = [(), (5,), (2, 3), (2, 1, 3, 2)]

CASES = {
    "normal": (lambda k, s: prng.normal(k, s, jnp.bfloat16), lambda k, s: jax.random.normal(k, s, jnp.bfloat16)),
    "uniform": (
        lambda k, s: prng.uniform(k, s, jnp.float32, -0.5, 2.0),
        lambda k, s: jax.random.uniform(k, s, jnp.float32, -0.5, 2.0),
    ),
    "truncated_normal": (
        lambda k, s: prng.truncated_normal(k, -1.5, 2.0, s),
        lambda k, s: jax.random.truncated_normal(k, -1.5, 2.0, s),
    ),
    "bernoulli": (lambda k, s: prng.bernoulli(k, 0.3, s), lambda k, s: jax.random.bernoulli(k, 0.3, s)),
    "randint": (lambda k, s: prng.randint(k, s, -3, 9), lambda k, s: jax.random.randint(k, s, -3, 9)),
}


@pytest.mark.parametrize("partitionable", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_draws_equal_jax_random(name, partitionable):
    ours, theirs = CASES[name]
    key = jax.random.key(7)
    with jax.threefry_partitionable(partitionable):
        for shape in SHAPES:
            a, b = ours(key, shape), theirs(key, shape)
            assert a.shape == b.shape == shape and a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name} {shape}")


def test_draws_are_jit_and_vmap_able():
    keys = jax.random.split(jax.random.key(1), 3)
    got = jax.jit(jax.vmap(lambda k: prng.normal(k, (2, 2, 3))))(keys)
    want = jax.vmap(lambda k: jax.random.normal(k, (2, 2, 3)))(keys)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_array_bounds_and_bad_shapes_are_refused_by_name():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="uniform: minval has shape \\(2, 1\\).*jax.random.uniform"):
        prng.uniform(key, (2, 3), jnp.float32, jnp.zeros((2, 1)), 1.0)
    with pytest.raises(ValueError, match="bernoulli: p has shape"):
        prng.bernoulli(key, jnp.full((2, 3), 0.5), (2, 3))
    with pytest.raises(ValueError, match="randint: maxval"):
        prng.randint(key, (4,), 0, jnp.arange(4))
    with pytest.raises(ValueError, match="normal: shape=\\(2, -1\\)"):
        prng.normal(key, (2, -1))
    with pytest.raises(TypeError, match="normal: shape=3"):
        prng.normal(key, 3)


def test_off_cpu_the_draw_goes_to_jax_random_as_is(monkeypatch):
    """On GPU/TPU the shaped draw is kept (XLA can partition it across a mesh): same values."""
    calls, real = [], jax.random.normal

    def spy(key, shape, dtype=jnp.float32):
        calls.append(tuple(shape))
        return real(key, shape, dtype)

    monkeypatch.setattr(prng.jax.random, "normal", spy)
    key = jax.random.key(2)
    on_cpu = prng.normal(key, (2, 3))
    traced = jax.jit(lambda k: prng.normal(k, (2, 3)))(key)
    monkeypatch.setattr(prng.jax, "default_backend", lambda: "gpu")
    off_cpu = prng.normal(key, (2, 3))
    # eager on CPU: one flat bucket of 4096 cut on the host; under jit: flat and exact; off CPU: shaped
    assert calls == [(4096,), (6,), (2, 3)]
    for got in (on_cpu, traced):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(off_cpu))


def test_bucket_sizes():
    assert [prng._bucket(n) for n in (0, 1, 4096, 4097, 65536, 65537, 1 << 20)] == [
        4096,
        4096,
        4096,
        65536,
        65536,
        1 << 20,
        1 << 20,
    ]
    # above 2**20: four significant bits, so never more than 1/8 extra
    for n in ((1 << 20) + 1, 11_720_448, (1 << 24) - 1, 3 << 22):
        size = prng._bucket(n)
        low_bits = size.bit_length() - 4
        assert n <= size <= n * 9 / 8 and (size >> low_bits) << low_bits == size


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 70_000, (1 << 20) + 3])
def test_bucketed_draws_equal_exact_draws_at_the_bucket_edges(size):
    """A draw cut from a longer bucket equals jax.random's draw of exactly that size (partitionable
    threefry), for the scaled variant too; the non-partitionable setting draws exactly."""
    key = jax.random.key(size)
    shape = (size,) if size < 4096 else (size // 7, 7) if size % 7 == 0 else (size,)
    got = prng.truncated_normal(key, -2, 2, shape, jnp.float32, scale=jnp.float32(0.3))
    want = jax.random.truncated_normal(key, -2, 2, shape, jnp.float32) * jnp.float32(0.3)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    got = prng.uniform(key, shape, jnp.bfloat16, -1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.random.uniform(key, shape, jnp.bfloat16, -1.0, 1.0)))
    with jax.threefry_partitionable(False):
        np.testing.assert_array_equal(
            np.asarray(prng.normal(key, shape, scale=2.0)), np.asarray(jax.random.normal(key, shape) * 2.0)
        )


def test_a_non_scalar_scale_is_refused():
    with pytest.raises(ValueError, match="normal: scale has shape \\(3,\\)"):
        prng.normal(jax.random.key(0), (3,), scale=jnp.ones(3))
