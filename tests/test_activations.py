"""Nested forward-AD activations: values, gradients, residual counts, higher-order AD, refusals."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax._src.ad_checkpoint import saved_residuals

from frugal.transforms import activations as A

# name -> (our factory kwargs, the jax.nn reference)
REFERENCES = {
    "gelu": ({}, functools.partial(jax.nn.gelu, approximate=False)),
    "gelu_tanh": ({}, functools.partial(jax.nn.gelu, approximate=True)),
    "silu": ({}, jax.nn.silu),
    "mish": ({}, jax.nn.mish),
    "elu": ({}, jax.nn.elu),
    "selu": ({}, jax.nn.selu),
    "softplus": ({}, jax.nn.softplus),
    "hard_swish": ({}, jax.nn.hard_swish),
    "squareplus": ({}, jax.nn.squareplus),
    "sigmoid": ({}, jax.nn.sigmoid),
    "tanh": ({}, jnp.tanh),
}

EDGES = np.array(
    [
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1.0,
        -1.0,
        2.9999,
        3.0,
        -3.0,
        6.0,
        20.0,
        -20.0,
        88.0,
        -88.0,
        1e4,
        -1e4,
        1e30,
        -1e30,
        np.inf,
        -np.inf,
        np.nan,
    ],
    np.float32,
)
RANDOM = np.random.default_rng(0).standard_normal(200).astype(np.float32) * 4


def _elementwise_grad(f):
    return jax.jit(jax.vmap(jax.grad(f)))


def _assert_same(ours, reference, atol, rtol=0.0):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    finite = ~np.isnan(reference)
    np.testing.assert_allclose(ours[finite], reference[finite], atol=atol, rtol=rtol)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_values_and_gradients_match_jax_nn_float32(name):
    kwargs, reference = REFERENCES[name]
    ours = A.get_activation(name, **kwargs)
    x = jnp.asarray(np.concatenate([EDGES, RANDOM]))
    _assert_same(jax.jit(ours)(x), jax.jit(reference)(x), atol=1e-6, rtol=1e-6)
    _assert_same(_elementwise_grad(ours)(x), _elementwise_grad(reference)(x), atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_gradients_match_jax_nn_bfloat16(name):
    kwargs, reference = REFERENCES[name]
    ours = A.get_activation(name, **kwargs)
    x = jnp.asarray(np.concatenate([EDGES, RANDOM])).astype(jnp.bfloat16)
    got, want = _elementwise_grad(ours)(x), _elementwise_grad(reference)(x)
    assert got.dtype == jnp.bfloat16
    # Forward and reverse mode round differently in bfloat16 (8 mantissa bits).
    _assert_same(got, want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_exactly_one_saved_residual(name):
    activation = A.get_activation(name)
    x = jnp.linspace(-4.0, 4.0, 96, dtype=jnp.float32).reshape(8, 12)
    saved = [aval for aval, where in saved_residuals(activation, x) if aval.shape]
    assert len(saved) == 1 and saved[0].shape == x.shape and saved[0].dtype == jnp.float32
    plain = [aval for aval, where in saved_residuals(REFERENCES[name][1], x) if aval.shape]
    assert len(plain) >= 1


def test_plain_autodiff_keeps_more_than_nested_for_composite_activations():
    x = jnp.ones((4, 8))
    for name in ("gelu_tanh", "mish"):
        plain = [a for a, _ in saved_residuals(REFERENCES[name][1], x) if a.shape]
        assert len(plain) >= 4, (name, plain)  # the intermediates nested AD avoids


def test_low_precision_derivative_is_the_one_residual_and_close():
    activation = A.gelu(approximate=True, derivative_dtype=jnp.bfloat16)
    x = jnp.asarray(RANDOM).reshape(20, 10)
    saved = [a for a, _ in saved_residuals(activation, x) if a.shape]
    assert [(a.shape, a.dtype) for a in saved] == [(x.shape, jnp.dtype(jnp.bfloat16))]
    got = _elementwise_grad(activation)(x.ravel())
    want = _elementwise_grad(REFERENCES["gelu_tanh"][1])(x.ravel())
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2**-8, atol=2**-8)
    assert float(jnp.max(jnp.abs(got - want))) > 0  # it really is stored in lower precision


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_second_derivatives_and_jacfwd(name):
    ours, reference = A.get_activation(name), REFERENCES[name][1]
    x = jnp.asarray(RANDOM[:16])
    second = jax.vmap(jax.grad(jax.grad(ours)))(x)
    np.testing.assert_allclose(second, jax.vmap(jax.grad(jax.grad(reference)))(x), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(jax.jacfwd(ours)(x), jax.jacfwd(reference)(x), atol=1e-6)


def test_vmap_jit_and_swish_beta():
    swish = A.swish(beta=1.7)
    x = jnp.asarray(RANDOM).reshape(10, 20)
    reference = lambda v: v * jax.nn.sigmoid(1.7 * v)
    np.testing.assert_allclose(jax.jit(jax.vmap(swish))(x), reference(x), rtol=1e-6)
    got = jax.jit(jax.grad(lambda v: jnp.sum(jax.vmap(swish)(v) ** 2)))(x)
    np.testing.assert_allclose(got, jax.grad(lambda v: jnp.sum(reference(v) ** 2))(x), rtol=1e-5, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(-60, 60, width=32), min_size=1, max_size=32))
def test_nested_any_function_matches_autodiff(values):
    f = lambda v: jnp.sin(v) * jnp.exp(-0.1 * v * v) + jnp.log1p(v * v)
    wrapped = A.nested_forward_ad(f, check_elementwise=False)
    x = jnp.asarray(values, jnp.float32)
    np.testing.assert_allclose(
        jax.grad(lambda v: jnp.sum(wrapped(v) * v))(x), jax.grad(lambda v: jnp.sum(f(v) * v))(x), atol=1e-5, rtol=1e-5
    )


def test_non_elementwise_functions_are_refused():
    with pytest.raises(ValueError, match="not element-wise.*depends on input element"):
        A.nested_forward_ad(jax.nn.softmax, check_elementwise=True)
    with pytest.raises(ValueError, match="not element-wise"):
        A.nested_forward_ad(lambda v: v - jnp.mean(v))
    with pytest.raises(ValueError, match="position"):
        A.nested_forward_ad(lambda v: v * jnp.arange(v.shape[0]))
    with pytest.raises(ValueError, match="shape"):
        A.nested_forward_ad(lambda v: jnp.sum(v))
    A.nested_forward_ad(lambda v: v * jnp.tanh(v), check_elementwise=True)  # element-wise: accepted


def test_custom_vjp_function_is_refused_clearly():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))
    with pytest.raises(ValueError, match="forward-mode"):
        A.nested_forward_ad(f)


def test_bad_arguments():
    with pytest.raises(TypeError, match="derivative_dtype"):
        A.nested_forward_ad(jnp.tanh, derivative_dtype=jnp.int8, check_elementwise=False)
    with pytest.raises(TypeError, match="callable"):
        A.nested_forward_ad(3)
    with pytest.raises(ValueError, match="name="):
        A.get_activation("swishy")
    with pytest.raises(ValueError, match="beta"):
        A.swish(beta=float("nan"))


def test_equal_settings_give_equal_hashable_wrappers():
    assert A.gelu() == A.gelu() and hash(A.gelu()) == hash(A.gelu())
    assert A.gelu() != A.gelu(derivative_dtype=jnp.bfloat16)
    assert A.base_function(A.mish()) is jax.nn.mish


@pytest.mark.slow
def test_sharded_inputs():
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from frugal.transforms.activations import mish
        mesh = Mesh(np.array(jax.devices()), ("data",))
        x = jax.device_put(jnp.linspace(-5, 5, 64).reshape(8, 8), NamedSharding(mesh, P("data")))
        act = mish()
        g = jax.jit(jax.grad(lambda v: jnp.sum(act(v) ** 2)))(x)
        r = jax.grad(lambda v: jnp.sum(jax.nn.mish(v) ** 2))(np.asarray(x))
        assert len(jax.devices()) == 4 and g.sharding.spec == P("data"), (jax.devices(), g.sharding)
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]
