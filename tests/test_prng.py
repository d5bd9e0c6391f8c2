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
    monkeypatch.setattr(prng.jax, "default_backend", lambda: "gpu")
    off_cpu = prng.normal(key, (2, 3))
    assert calls == [(6,), (2, 3)]
    np.testing.assert_array_equal(np.asarray(on_cpu), np.asarray(off_cpu))
