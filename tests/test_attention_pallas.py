"""The Pallas block-sparse kernel (interpret mode on CPU) against the dense reference, forward and
backward, plus lowering for GPU (Triton) and TPU (Mosaic) through jax.export without a device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import export

from frugal.jaxlib_ext.hybrid_attention import hybrid_attention_pallas, hybrid_attention_reference
from frugal.transforms.attention import AttentionPattern, hybrid_attention

TOL = 1e-5


def _inputs(seed, n, heads, dim, padding, global_proj):
    rng = np.random.default_rng(seed)
    arrays = [jnp.asarray(rng.normal(size=(2, n, heads, dim)), jnp.float32) for _ in range(4)]
    key_mask = jnp.asarray(rng.random((2, n)) > 0.25) if padding else None
    glob = (
        tuple(jnp.asarray(rng.normal(size=(2, n, heads, dim)), jnp.float32) for _ in range(3)) if global_proj else None
    )
    return arrays, key_mask, glob


def _value_and_grads(impl, pattern, arrays, key_mask, glob):
    q, k, v, cot = arrays

    def loss(q, k, v, glob):
        out = hybrid_attention(q, k, v, pattern, impl=impl, key_mask=key_mask, global_qkv=glob, block_size=16)
        return jnp.sum(out * cot), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, glob)
    return out, grads


def _assert_tree_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=TOL, rtol=TOL)


@settings(max_examples=3, deadline=None)
@given(
    n=st.integers(5, 40),
    window=st.tuples(st.integers(0, 20), st.integers(0, 20)),
    dilation=st.sampled_from([1, 2, (1, 3)]),
    num_global=st.sampled_from([0, 1, 4]),
    causal=st.booleans(),
    padding=st.booleans(),
    global_proj=st.booleans(),
    seed=st.integers(0, 5),
)
def test_pallas_matches_dense_outputs_and_grads(n, window, dilation, num_global, causal, padding, global_proj, seed):
    tokens = tuple(np.random.default_rng(seed).choice(n, size=min(num_global, n), replace=False).tolist())
    pattern = AttentionPattern(window=window, dilation=dilation, global_tokens=tokens, causal=causal)
    inputs = _inputs(seed, n, 2, 8, padding, global_proj)
    _assert_tree_close(_value_and_grads("pallas", pattern, *inputs), _value_and_grads("dense", pattern, *inputs))


def test_longformer_shape_with_sequence_not_divisible_by_block():
    # many globals, a window wider than the sequence, 37 tokens with blocks of 16
    pattern = AttentionPattern(window=(64, 64), global_tokens=(0, 1, 2, 17, 36))
    inputs = _inputs(11, 37, 2, 8, True, True)
    _assert_tree_close(_value_and_grads("pallas", pattern, *inputs), _value_and_grads("dense", pattern, *inputs))


def test_kernel_matches_its_own_reference_with_odd_head_dim():
    rng = np.random.default_rng(3)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 33, 3, 5)), jnp.float32) for _ in range(3))
    kw = dict(window=(4, 2), dilation=(1, 2, 1), global_tokens=(7,))
    got = jax.jit(lambda q, k, v: hybrid_attention_pallas(q, k, v, block_size=16, interpret=True, **kw))(q, k, v)
    np.testing.assert_allclose(got, hybrid_attention_reference(q, k, v, **kw), atol=TOL)


def test_bad_block_size_and_2d_patterns_are_rejected():
    q = jnp.zeros((1, 16, 1, 8))
    with pytest.raises(ValueError, match="block_size=24 must be a power of two"):
        hybrid_attention_pallas(q, q, q, window=(2, 2), block_size=24)
    with pytest.raises(ValueError, match="impl='pallas' supports 1-D patterns"):
        hybrid_attention(q, q, q, AttentionPattern(window=2, grid=(4, 4)), impl="pallas")


@pytest.mark.parametrize("platform, backend, block", [("cuda", "triton", 64), ("tpu", "mosaic_tpu", 128)])
def test_kernel_lowers_for_gpu_and_tpu(platform, backend, block):
    spec = jax.ShapeDtypeStruct((1, 256, 2, 64), jnp.float32)

    def forward(q, k, v):
        return hybrid_attention_pallas(
            q,
            k,
            v,
            window=(32, 32),
            dilation=(1, 2),
            global_tokens=(0, 100),
            causal=False,
            block_size=block,
            interpret=False,
            backend=backend,
        )

    grad = jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v)), argnums=(0, 1, 2))
    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")] if backend == "triton" else []
    marker = "__gpu$xla.gpu.triton" if backend == "triton" else "tpu_custom_call"
    for fn in (forward, grad):
        exported = export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(spec, spec, spec)
        assert marker in exported.mlir_module()


@pytest.mark.parametrize("platform, marker", [("cuda", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
def test_auto_resolves_to_the_pallas_kernel_when_lowered_for_gpu_and_tpu(platform, marker):
    """impl="auto" picks per platform at lowering time: the exported CUDA/TPU modules hold the
    kernel (forward and gradient), the CPU module the XLA path; a 2-D pattern stays on XLA."""
    from frugal.transforms.attention import AttentionPattern, hybrid_attention

    pattern = AttentionPattern(window=(32, 32), global_tokens=(0,))
    spec = jax.ShapeDtypeStruct((1, 256, 2, 64), jnp.float32)
    forward = jax.jit(lambda q, k, v: hybrid_attention(q, k, v, pattern))
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(hybrid_attention(q, k, v, pattern)), argnums=(0, 1, 2)))
    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")] if platform == "cuda" else []
    for fn in (forward, grad):
        assert marker in export.export(fn, platforms=[platform], disabled_checks=checks)(spec, spec, spec).mlir_module()
    cpu = export.export(forward, platforms=["cpu"])(spec, spec, spec).mlir_module()
    assert "triton" not in cpu and "tpu_custom_call" not in cpu
    grid = AttentionPattern(window=(1, 1), grid=(16, 16))
    two_d = jax.jit(lambda q, k, v: hybrid_attention(q, k, v, grid))
    assert (
        marker not in export.export(two_d, platforms=[platform], disabled_checks=checks)(spec, spec, spec).mlir_module()
    )
