"""One contract for hybrid attention across its implementations (dense, banded XLA, Pallas in
interpret mode, and the kernel's own reference): same outputs over random shapes, patterns, dtypes
and edge sizes; the same NaN/inf semantics; the same clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.jaxlib_ext.hybrid_attention import hybrid_attention_pallas, hybrid_attention_reference, reference_mask
from frugal.transforms.attention import AttentionPattern, hybrid_attention

IMPLS = ("dense", "banded", "pallas")


def expected_nan_rows(mask, bad_rows):
    """(heads, seq) rows that attend at least one bad key row, from the boolean mask (heads, q, k)."""
    return np.any(mask & bad_rows[None, None, :], axis=-1)


@st.composite
def problems(draw):
    seq = draw(st.sampled_from([1, 2, 7, 16, 33]))
    heads = draw(st.integers(1, 2))
    left, right = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    dilation = draw(st.integers(1, 2))
    globals_ = tuple(sorted(draw(st.sets(st.integers(0, seq - 1), max_size=min(2, seq)))))
    causal = draw(st.booleans())
    dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16]))
    seed = draw(st.integers(0, 2**16))
    return seq, heads, (left, right), dilation, globals_, causal, dtype, seed


# Each example compiles the three implementations (Pallas in interpret mode) for a new shape, about
# 5 s on a 2-core CPU (more beside a second test worker); 4 examples (the same ones every run, see
# tests/conftest.py) keep this test near 30 s of the CI budget.
@settings(max_examples=4, deadline=None)
@given(problems())
def test_implementations_agree_and_share_nan_semantics(problem):
    seq, heads, window, dilation, globals_, causal, dtype, seed = problem
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((1, seq, heads, 8)), dtype) for _ in range(3))
    pattern = AttentionPattern(window=window, dilation=dilation, global_tokens=globals_, causal=causal)
    reference = np.asarray(
        hybrid_attention_reference(q, k, v, window=window, dilation=dilation, global_tokens=globals_, causal=causal),
        np.float32,
    )
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    for impl in IMPLS:
        out = hybrid_attention(q, k, v, pattern, impl=impl)
        assert out.shape == q.shape and out.dtype == dtype, impl
        np.testing.assert_allclose(np.asarray(out, np.float32), reference, rtol=tol, atol=tol, err_msg=impl)
    # One value row NaN, one key row inf: exactly the rows attending to them turn NaN, everywhere.
    bad_v, bad_k = int(rng.integers(seq)), int(rng.integers(seq))
    v_bad = v.at[0, bad_v, :, 0].set(jnp.nan)
    k_bad = k.at[0, bad_k, :, 1].set(jnp.inf)
    mask = np.stack([reference_mask(seq, window, dilation, globals_, causal)] * heads)
    bad_rows = np.zeros(seq, bool)
    bad_rows[[bad_v, bad_k]] = True
    want = expected_nan_rows(mask, bad_rows).T  # (seq, heads)
    for impl in IMPLS:
        got = np.isnan(np.asarray(hybrid_attention(q, k_bad, v_bad, pattern, impl=impl), np.float32))
        np.testing.assert_array_equal(got.any(-1)[0], want, err_msg=impl)
        assert not np.any(got.any(-1)[0] & ~want)
    got = np.isnan(
        np.asarray(
            hybrid_attention_pallas(
                q, k_bad, v_bad, window=window, dilation=dilation, global_tokens=globals_, causal=causal
            ),
            np.float32,
        )
    )
    np.testing.assert_array_equal(got.any(-1)[0], want, err_msg="hybrid_attention_pallas")


def test_a_nan_value_row_reaches_only_its_neighbours():
    """The case that gave three answers before: 64 rows, window 2, a NaN in value row 10."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 64, 1, 16)), jnp.float32) for _ in range(3))
    v = v.at[0, 10, 0, 3].set(jnp.nan)
    pattern = AttentionPattern(window=(2, 2))
    for impl in IMPLS:
        rows = np.flatnonzero(np.isnan(np.asarray(hybrid_attention(q, k, v, pattern, impl=impl))).any((0, 2, 3)))
        assert rows.tolist() == [8, 9, 10, 11, 12], impl


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda q: hybrid_attention(q[:, :0], q[:, :0], q[:, :0], AttentionPattern(window=2)), "sequence is empty"),
        (lambda q: hybrid_attention_pallas(q, q, q[:, :5], window=(1, 1)), "agree on \\(batch, seq, heads\\)"),
        (lambda q: hybrid_attention_pallas(q, q, q, window=(-1, 2)), "window must be \\(left, right\\)"),
        (lambda q: hybrid_attention_pallas(q, q, q, window=(1, 1), global_tokens=(9,)), "global_tokens must be"),
        (lambda q: hybrid_attention_pallas(q, q, q, window=(1, 1), dilation=0), "dilation must be"),
        (lambda q: hybrid_attention_pallas(q[:, :0], q[:, :0], q[:, :0], window=(1, 1)), "sequence is empty"),
        (lambda q: hybrid_attention(q, q, q, AttentionPattern(window=2), scale=0.0), "scale must be finite and > 0"),
        (lambda q: hybrid_attention_pallas(q, q, q, window=(1, 1), scale=-1.0), "scale must be finite and > 0"),
    ],
)
def test_bad_calls_name_the_argument(call, message):
    q = jnp.ones((1, 8, 2, 4))
    with pytest.raises(ValueError, match=message):
        call(q)


def test_gradients_stay_finite_away_from_a_nan_value_row():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 32, 1, 8)), jnp.float32) for _ in range(3))
    v = v.at[0, 30, 0, 0].set(jnp.nan)
    pattern = AttentionPattern(window=(1, 1))
    for impl in IMPLS:
        grad = jax.grad(lambda q: jnp.sum(hybrid_attention(q, k, v, pattern, impl=impl)[:, :20]))(q)
        assert np.all(np.isfinite(np.asarray(grad))), impl
