"""ANT matmul: Pallas kernel (interpret mode) == jnp reference == float64 NumPy, plus lowering."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import export

from frugal.jaxlib_ext.ant_matmul import (
    CodeFormat,
    _decode_parts,
    ant_matmul,
    ant_matmul_reference,
)
from frugal.transforms.quant import NumericType, decode, decode_parts, pack_int4, quantize, quantize_to_codes

FORMATS = [CodeFormat(kind, signed) for kind in ("int", "pot", "float", "flint") for signed in (False, True)]


def numpy_expected(a_codes, a_scale, w_codes, w_scale, a_type, w_type):
    """float64 product of the decoded codes, decoded by frugal.transforms.quant (independent decoder)."""
    a = decode(np.asarray(a_codes), a_type) * np.asarray(a_scale, np.float64).reshape(-1, 1)
    w = decode(np.asarray(w_codes), w_type) * np.asarray(w_scale, np.float64).reshape(1, -1)
    return a @ w


def random_operands(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a_codes = rng.integers(0, 16, (m, k))
    w_codes = rng.integers(0, 16, (k, n))
    a_scale = rng.uniform(0.01, 0.1, m).astype(np.float32)
    w_scale = rng.uniform(0.5, 2.0, n).astype(np.float32)
    return a_codes, a_scale, w_codes, w_scale


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.kind}{'s' if f.signed else 'u'}")
def test_in_kernel_decoder_matches_the_numerics_module(fmt):
    codes = np.arange(16)
    integer, shift = _decode_parts(codes, fmt, np)
    ref_integer, ref_shift = decode_parts(codes, NumericType(fmt.kind, 4, fmt.signed))
    np.testing.assert_array_equal(integer * 2.0**shift, ref_integer * 2.0**ref_shift)
    assert CodeFormat.of(NumericType(fmt.kind, 4, fmt.signed)) == fmt


_pallas = jax.jit(
    functools.partial(ant_matmul, impl="pallas", interpret=True),
    static_argnames=("a_format", "w_format", "accumulate", "block_m", "block_n", "block_k", "target", "schedule"),
)
_reference = jax.jit(ant_matmul_reference, static_argnames=("a_format", "w_format"))


@pytest.mark.parametrize(
    "m, k, n, a_fmt, w_fmt, accumulate, blocks",
    [
        (5, 7, 3, CodeFormat("flint", False), CodeFormat("flint", True), "auto", {}),
        (33, 301, 130, CodeFormat("int", False), CodeFormat("int", True), "int32", {}),
        (
            40,
            600,
            200,
            CodeFormat("pot", False),
            CodeFormat("flint", True),
            "float32",
            dict(block_m=16, block_n=128, block_k=256),
        ),  # several K blocks, odd M/N tails
        (1, 1, 1, CodeFormat("float", False), CodeFormat("float", True), "auto", {}),
        (17, 64, 9, CodeFormat("float", True), CodeFormat("pot", True), "int32", {}),
    ],
)
@pytest.mark.parametrize("target", ["cpu", "gpu", "tpu"])
def test_kernel_equals_reference(m, k, n, a_fmt, w_fmt, accumulate, blocks, target):
    """Each target's tiles and schedule (gpu/cpu: K loop inside the kernel; tpu: K grid axis), interpreted."""
    a_codes, a_scale, w_codes, w_scale = random_operands(m, k, n, seed=m + k + n)
    a_packed = jnp.asarray(pack_int4(a_codes, axis=1))
    w_packed = jnp.asarray(pack_int4(w_codes, axis=0))
    expected = numpy_expected(
        a_codes,
        a_scale,
        w_codes,
        w_scale,
        NumericType(a_fmt.kind, 4, a_fmt.signed),
        NumericType(w_fmt.kind, 4, w_fmt.signed),
    )
    reference = _reference(a_packed, a_scale, w_packed, w_scale, a_format=a_fmt, w_format=w_fmt)
    blocks = blocks if target == "cpu" else {}
    kernel = _pallas(
        a_packed,
        a_scale,
        w_packed,
        w_scale,
        a_format=a_fmt,
        w_format=w_fmt,
        accumulate=accumulate,
        target=target,
        **blocks,
    )
    scale = np.abs(expected).max() + 1e-30
    assert kernel.shape == (m, n) and kernel.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(reference) / scale, expected / scale, atol=2e-6)
    np.testing.assert_allclose(np.asarray(kernel) / scale, expected / scale, atol=2e-6)


@functools.partial(jax.jit, static_argnames=("impl",))
def _quantized_matmul(x, w, a_alpha, w_alpha, impl):
    a_type, w_type = NumericType("flint", 4, False), NumericType("int", 4, True)
    a_codes, a_scale = quantize_to_codes(x, a_type, a_alpha)
    w_codes, w_scale = quantize_to_codes(w, w_type, w_alpha, axis=1)
    out = ant_matmul(
        pack_int4(a_codes, axis=-1),
        a_scale,
        pack_int4(w_codes, axis=0),
        w_scale.reshape(-1),
        a_format=a_type,
        w_format=w_type,
        impl=impl,
    )
    fake = quantize(x, a_type, a_alpha) @ quantize(w, w_type, w_alpha, axis=1)
    return out, fake


def test_end_to_end_from_float_tensors_and_leading_dims():
    rng = np.random.default_rng(7)
    x = np.abs(rng.normal(size=(2, 3, 20))).astype(np.float32)  # activations: unsigned
    w = rng.laplace(size=(20, 12)).astype(np.float32)
    a_alpha, w_alpha = jnp.float32(x.max()), jnp.asarray(np.abs(w).max(axis=0))
    out, fake = _quantized_matmul(jnp.asarray(x), jnp.asarray(w), a_alpha, w_alpha, impl="pallas")
    assert out.shape == (2, 3, 12)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fake), rtol=1e-5, atol=1e-5)
    auto, _ = _quantized_matmul(jnp.asarray(x), jnp.asarray(w), a_alpha, w_alpha, impl="auto")
    np.testing.assert_allclose(np.asarray(auto), np.asarray(out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("a_kind, w_kind", [("flint", "flint"), ("pot", "int")])  # int8 and bf16 operands
def test_kernel_lowers_for_gpu_and_tpu(platform, a_kind, w_kind):
    """Several K blocks (K = 1536, MiniLM's FFN), both operand types, for each platform's target."""
    a_packed = jnp.zeros((64, 768), jnp.uint8)
    w_packed = jnp.zeros((768, 384), jnp.uint8)
    fn = functools.partial(
        ant_matmul,
        a_format=CodeFormat(a_kind, False),
        w_format=CodeFormat(w_kind, True),
        impl="pallas",
        target="gpu" if platform == "cuda" else "tpu",
        interpret=False,
    )
    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")] if platform == "cuda" else []
    exported = export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(
        a_packed, jnp.float32(1.0), w_packed, jnp.ones(384, jnp.float32)
    )
    text = exported.mlir_module()
    assert ("triton" in text) if platform == "cuda" else ("tpu_custom_call" in text)


def test_grid_schedule_refused_for_gpu_and_targets_checked():
    args = (np.zeros((4, 8), np.uint8), 1.0, np.zeros((8, 4), np.uint8), 1.0)
    fmt = dict(a_format=CodeFormat("int", False), w_format=CodeFormat("int", True), impl="pallas")
    with pytest.raises(ValueError, match="race on GPU"):
        ant_matmul(*args, **fmt, target="gpu", schedule="grid")
    with pytest.raises(ValueError, match="target must be one of"):
        ant_matmul(*args, **fmt, target="metal")
    with pytest.raises(ValueError, match="power of two on gpu"):
        ant_matmul(*args, **fmt, target="gpu", block_m=48)
    with pytest.raises(ValueError, match="K = 0"):
        ant_matmul(np.zeros((4, 0), np.uint8), 1.0, np.zeros((0, 4), np.uint8), 1.0, **fmt)
    with pytest.raises(ValueError, match="needs int8 operands"):
        ant_matmul(*args, a_format=CodeFormat("pot", False), w_format=CodeFormat("int", True), accumulate="int32")


def test_call_is_named_for_cost_models():
    """The call leaves a jit named by its formats in the jaxpr; accel.trace_workload counts it as
    one 4-bit GEMM of the right shape instead of its decode internals."""
    from frugal.accel import trace_workload
    from frugal.jaxlib_ext.ant_matmul import ant_matmul_call_name

    a_fmt, w_fmt = CodeFormat("flint", False), CodeFormat("int", True)
    fn = functools.partial(ant_matmul, a_format=a_fmt, w_format=w_fmt, impl="reference")
    args = (jnp.zeros((6, 10), jnp.uint8), 1.0, jnp.zeros((10, 12), jnp.uint8), jnp.ones(12))
    names = [e.params.get("name") for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns]
    assert ant_matmul_call_name(a_fmt, w_fmt) in names
    workload = trace_workload(fn, *args)
    assert [(g.m, g.k, g.n, g.a_bits, g.w_bits) for g in workload.gemms] == [(6, 20, 12, 4, 4)]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(a_packed=np.zeros((2, 3), np.int32)), TypeError),
        (dict(w_packed=np.zeros((4, 5), np.uint8)), ValueError),
        (dict(a_format=NumericType("int", 8, True)), ValueError),
        (dict(a_format="int"), TypeError),
        (dict(impl="cuda"), ValueError),
        (dict(impl="pallas", block_k=100), ValueError),
        (dict(impl="pallas", schedule="diagonal"), ValueError),
        (dict(a_scale=np.ones(3)), ValueError),
        (
            dict(
                impl="pallas",
                accumulate="int32",
                a_format=CodeFormat("pot", False),
                w_format=CodeFormat("pot", False),
                block_k=1 << 14,
            ),
            ValueError,
        ),
        (dict(impl="pallas", accumulate="int64"), ValueError),
    ],
)
def test_bad_input_raises(kwargs, error):
    args = dict(
        a_packed=np.zeros((2, 3), np.uint8),
        a_scale=1.0,
        w_packed=np.zeros((3, 5), np.uint8),
        w_scale=1.0,
        a_format=CodeFormat("int", False),
        w_format=CodeFormat("int", True),
    )
    args.update(kwargs)
    with pytest.raises(error):
        ant_matmul(**args)


@settings(max_examples=50, deadline=None)
@given(
    m=st.sampled_from([0, 1, 3, 8, 17]),
    k=st.sampled_from([1, 2, 7, 64, 129]),
    n=st.sampled_from([0, 1, 5, 16, 33]),
    a_fmt=st.sampled_from(FORMATS),
    w_fmt=st.sampled_from(FORMATS),
    target=st.sampled_from(["cpu", "gpu", "tpu"]),
    seed=st.integers(0, 2**16),
)
def test_every_implementation_agrees_on_random_shapes_and_formats(m, k, n, a_fmt, w_fmt, target, seed):
    """Reference and Pallas (each target's tiles and schedule, interpreted) against float64 NumPy,
    edge sizes included (an empty M or N gives an empty result on every path)."""
    a_codes, a_scale, w_codes, w_scale = random_operands(m, k, n, seed)
    a_packed, w_packed = jnp.asarray(pack_int4(a_codes, axis=1)), jnp.asarray(pack_int4(w_codes, axis=0))
    expected = numpy_expected(
        a_codes,
        a_scale,
        w_codes,
        w_scale,
        NumericType(a_fmt.kind, 4, a_fmt.signed),
        NumericType(w_fmt.kind, 4, w_fmt.signed),
    )
    scale = np.abs(expected).max(initial=0.0) + 1e-30
    for out in (
        ant_matmul(a_packed, a_scale, w_packed, w_scale, a_format=a_fmt, w_format=w_fmt, impl="reference"),
        _pallas(a_packed, a_scale, w_packed, w_scale, a_format=a_fmt, w_format=w_fmt, target=target),
    ):
        assert out.shape == (m, n) and out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out) / scale, expected / scale, atol=2e-6)
