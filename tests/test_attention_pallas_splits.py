"""The Pallas attention kernel's GPU structure: global rows and global keys are spread over blocks of
the sequence (split loops combined by XLA), the caller's (batch, seq, heads, dim) arrays reach the
kernel without transposes (heads and dilation classes are found by the index maps), and the float32
product precision follows the documented knob. Numbers against the NumPy-free dense reference run in
interpret mode; structure is read from the jaxpr built for Triton and Mosaic TPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_kernel_schedules import pallas_calls as _pallas_calls

import frugal.jaxlib_ext.hybrid_attention as kernel_module
from frugal.jaxlib_ext.hybrid_attention import hybrid_attention_pallas, hybrid_attention_reference


def _all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns") and eqn.primitive.name != "pallas_call":
                    yield from _all_eqns(inner)


def _inputs(n, heads=2, dim=8, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(2, n, heads, dim)), dtype) for _ in range(4)]


@pytest.mark.parametrize("blocks_per_split", [1, 4])
@pytest.mark.parametrize("causal, dilation", [(False, 1), (True, 1), (False, (1, 2))])
def test_split_global_rows_and_keys_match_the_reference(monkeypatch, blocks_per_split, causal, dilation):
    """n = 200 in blocks of 16: the global rows' key loop and the global keys' query loop are cut into
    up to 13 splits (blocks_per_split=1, some splits of a single block) and still agree with the dense
    reference, forward and backward, with key padding and three global tokens (one the last token)."""
    monkeypatch.setattr(kernel_module, "_BLOCKS_PER_SPLIT", blocks_per_split)
    q, k, v, cot = _inputs(200)
    key_mask = jnp.asarray(np.arange(200)[None, :] < np.array([[200], [163]]))
    kw = dict(window=(9, 6), dilation=dilation, global_tokens=(0, 77, 199), causal=causal, key_mask=key_mask)

    def loss(fn):
        def value(q, k, v):
            out = fn(q, k, v, **kw)
            return jnp.sum(out * cot), out

        return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (_, got), got_grads = loss(lambda *a, **k: hybrid_attention_pallas(*a, **k, block_size=16, interpret=True))
    (_, want), want_grads = loss(hybrid_attention_reference)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-5)


def _gpu_grad_jaxpr(n, *, dilation=1, global_tokens=(0,), backend="triton", block=64, heads=12):
    spec = jax.ShapeDtypeStruct((1, n, heads, 64), jnp.float32)

    def forward(q, k, v):
        return hybrid_attention_pallas(
            q,
            k,
            v,
            window=(256, 256),
            dilation=dilation,
            global_tokens=global_tokens,
            block_size=block,
            interpret=False,
            backend=backend,
        )

    grad = jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v)), argnums=(0, 1, 2))
    return jax.make_jaxpr(forward)(spec, spec, spec).jaxpr, jax.make_jaxpr(grad)(spec, spec, spec).jaxpr


def test_global_rows_and_global_keys_run_on_many_programs():
    """Longformer-base at 16,384 tokens (12 heads, one global token): no kernel call has fewer than
    12 x 32 programs, so the global row's forward and dQ, and the global key's dK/dV, are spread over
    blocks of the sequence instead of one program per head walking all 256 blocks."""
    forward, grad = _gpu_grad_jaxpr(16384)
    for jaxpr in (forward, grad):
        calls = list(_pallas_calls(jaxpr))
        assert calls
        for eqn in calls:
            grid = tuple(int(g) for g in eqn.params["grid_mapping"].grid)
            assert np.prod(grid) >= 12 * 32, grid
    grids = [tuple(int(g) for g in e.params["grid_mapping"].grid) for e in _pallas_calls(grad)]
    assert any(g[-1] == kernel_module._MAX_SPLITS for g in grids)  # the split axis is in use


@pytest.mark.parametrize("dilation", [1, 3])
def test_triton_path_never_transposes_the_sequence(dilation):
    """On Triton the kernels read the caller's (batch, seq, heads, dim) arrays in place: the only
    transposes in the forward and backward programs are of arrays no larger than the global rows'
    (here 16 of them) or the per-row vectors, never of q, k, v, the output or their cotangents."""
    n, heads, dim = 4096, 12, 64
    whole = n * heads * dim
    for jaxpr in _gpu_grad_jaxpr(n, dilation=dilation):
        for eqn in _all_eqns(jaxpr):
            if eqn.primitive.name == "transpose":
                size = int(np.prod(eqn.invars[0].aval.shape))
                assert size < whole // 8, (eqn.invars[0].aval.shape, eqn.params)


@pytest.mark.parametrize("platform, backend", [("tpu", "mosaic_tpu"), ("cuda", "triton")])
def test_split_kernels_lower_for_tpu_and_cuda(platform, backend):
    """Mosaic TPU refuses tiles that do not span the array's last two dims (there the arrays are laid
    out (batch, heads, dil, seq, dim)); lowering the gradient at 2,048 tokens, where the global row
    and global keys use split loops, with dilation 2 checks every tile for the device."""
    from jax import export

    spec = jax.ShapeDtypeStruct((1, 2048, 2, 64), jnp.float32)

    def loss(q, k, v):
        out = hybrid_attention_pallas(
            q,
            k,
            v,
            window=(64, 64),
            dilation=2,
            global_tokens=(0, 1000),
            block_size=128,
            interpret=False,
            backend=backend,
        )
        return jnp.sum(out)

    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")] if platform == "cuda" else []
    fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    module = export.export(fn, platforms=[platform], disabled_checks=checks)(spec, spec, spec).mlir_module()
    assert ("tpu_custom_call" if platform == "tpu" else "triton") in module


def test_bfloat16_precision_feeds_bf16_operands_and_stays_close():
    q, k, v, _ = _inputs(64, dim=16)
    kw = dict(window=(8, 8), global_tokens=(0,), block_size=16, interpret=True)
    exact = hybrid_attention_pallas(q, k, v, **kw, precision="highest")
    fast = hybrid_attention_pallas(q, k, v, **kw, precision="bfloat16")
    np.testing.assert_allclose(exact, hybrid_attention_reference(q, k, v, window=(8, 8), global_tokens=(0,)), atol=1e-5)
    error = float(jnp.max(jnp.abs(fast - exact)))
    assert 1e-5 < error < 5e-2  # bf16 operands: visibly rounded, still close
    jaxpr = jax.make_jaxpr(lambda q, k, v: hybrid_attention_pallas(q, k, v, **kw, precision="bfloat16"))(q, k, v)
    (call, *_) = _pallas_calls(jaxpr.jaxpr)
    body = call.params["jaxpr"]
    dots = [e for e in _all_eqns(body) if e.primitive.name == "dot_general"]
    assert dots and all(x.aval.dtype == jnp.bfloat16 for e in dots for x in e.invars)


def test_precision_is_validated():
    q, k, v, _ = _inputs(16)
    with pytest.raises(ValueError, match="precision='tf16'"):
        hybrid_attention_pallas(q, k, v, window=(2, 2), precision="tf16", interpret=True)


def test_check_finite_false_skips_only_the_contract():
    """Without the contract a NaN value row is not masked to its attending rows; with finite inputs
    both give the same output."""
    q, k, v, _ = _inputs(32)
    kw = dict(window=(2, 2), block_size=16, interpret=True)
    np.testing.assert_array_equal(
        hybrid_attention_pallas(q, k, v, **kw), hybrid_attention_pallas(q, k, v, **kw, check_finite=False)
    )
    jaxpr = jax.make_jaxpr(lambda q, k, v: hybrid_attention_pallas(q, k, v, **kw, check_finite=False))(q, k, v)
    assert not any(e.primitive.name == "is_finite" for e in _all_eqns(jaxpr.jaxpr))


@pytest.mark.parametrize("causal, dilation, tokens", [(False, 1, (0, 77, 199)), (True, (1, 2), (0, 5)), (False, 3, ())])
def test_tpu_streamed_tiles_match_the_reference(causal, dilation, tokens):
    """The Mosaic TPU structure (key or query tiles along an "arbitrary" grid axis, running sums in
    VMEM scratch), run in interpret mode: forward and gradients agree with the dense reference."""
    q, k, v, cot = _inputs(200)
    key_mask = jnp.asarray(np.arange(200)[None, :] < np.array([[200], [163]]))
    kw = dict(window=(9, 6), dilation=dilation, global_tokens=tokens, causal=causal, key_mask=key_mask)

    def loss(fn):
        def value(q, k, v):
            out = fn(q, k, v, **kw)
            return jnp.sum(out * cot), out

        return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    tpu = lambda *a, **k: hybrid_attention_pallas(*a, **k, block_size=16, interpret=True, backend="mosaic_tpu")
    (_, got), got_grads = loss(tpu)
    (_, want), want_grads = loss(hybrid_attention_reference)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-5)


def test_tpu_blocks_never_hold_a_whole_sequence():
    """On TPU every block a kernel holds in VMEM spans at most one tile of the sequence (128 rows, or
    the 16 padded global rows), at 8,192 tokens, forward and backward; the tile axis that accumulates
    is the grid's last, marked "arbitrary"."""
    _, grad = _gpu_grad_jaxpr(8192, dilation=2, global_tokens=(0, 9), backend="mosaic_tpu", block=128, heads=2)
    calls = list(_pallas_calls(grad))
    assert calls
    for eqn in calls:
        mapping = eqn.params["grid_mapping"]
        for block in mapping.block_mappings:
            sizes = [int(getattr(b, "block_size", b)) for b in block.block_shape if hasattr(b, "block_size")]
            assert max(sizes) <= 128, block.block_shape
        semantics = [str(s).lower() for s in eqn.params["compiler_params"].dimension_semantics]
        assert "arbitrary" in semantics[-1] and all("parallel" in s for s in semantics[:-1])


def test_unknown_backend_is_refused():
    q, k, v, _ = _inputs(16)
    with pytest.raises(ValueError, match="backend='cuda'"):
        hybrid_attention_pallas(q, k, v, window=(2, 2), backend="cuda", interpret=True)
