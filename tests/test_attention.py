"""hybrid_attention: the pattern's mask against a loop-by-definition reference, the dense path against
jax.nn.dot_product_attention, and the banded path against the dense path (outputs and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.transforms.attention import AttentionPattern, dense_mask, hybrid_attention

TOL = 1e-5


def mask_by_definition(pattern: AttentionPattern, n: int, heads: int) -> np.ndarray:
    """The pattern's semantics written out with plain loops (independent of dense_mask)."""
    left, right = pattern.window
    glob = set(pattern.global_tokens)
    local = [i for i in range(n) if pattern.grid is None or i not in glob]
    coord = {}
    for slot, pos in enumerate(local):
        coord[pos] = divmod(slot, pattern.grid[1]) if pattern.grid else (0, pos)
    out = np.zeros((heads, n, n), bool)
    for h, d in enumerate(pattern.head_dilations(heads)):
        for i in range(n):
            for j in range(n):
                ok = i in glob or j in glob
                if i in coord and j in coord:
                    dr, dc = coord[j][0] - coord[i][0], coord[j][1] - coord[i][1]
                    ok |= all(-left * d <= x <= right * d and x % d == 0 for x in (dr, dc))
                if pattern.causal and j > i:
                    ok = False
                out[h, i, j] = ok
    return out


def random_inputs(seed, batch, n, heads, dim, *, padding=False, global_proj=False):
    rng = np.random.default_rng(seed)
    arrays = [jnp.asarray(rng.normal(size=(batch, n, heads, dim)), jnp.float32) for _ in range(3)]
    key_mask = jnp.asarray(rng.random((batch, n)) > 0.25) if padding else None
    glob = (
        tuple(jnp.asarray(rng.normal(size=(batch, n, heads, dim)), jnp.float32) for _ in range(3))
        if global_proj
        else None
    )
    cotangent = jnp.asarray(rng.normal(size=(batch, n, heads, dim)), jnp.float32)
    return arrays, key_mask, glob, cotangent


def outputs_and_grads(impl, pattern, arrays, key_mask, glob, cotangent, block_size=None):
    def loss(q, k, v, glob):
        out = hybrid_attention(q, k, v, pattern, impl=impl, key_mask=key_mask, global_qkv=glob, block_size=block_size)
        return jnp.sum(out * cotangent), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(*arrays, glob)
    return out, grads


def assert_close_tree(a, b, tol=TOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol)


@st.composite
def patterns(draw):
    """Random patterns covering the edge cases: huge windows, no/many globals, dilation, 2-D."""
    heads = draw(st.sampled_from([1, 2, 3]))
    two_d = draw(st.booleans())
    num_global = draw(st.sampled_from([0, 0, 1, 2, 5]))
    if two_d:
        grid = (draw(st.integers(1, 6)), draw(st.integers(1, 7)))
        n = grid[0] * grid[1] + num_global
    else:
        grid = None
        n = draw(st.integers(max(1, num_global), 41))
    num_global = min(num_global, n)
    globals_ = (
        tuple(sorted(draw(st.sets(st.integers(0, n - 1), min_size=num_global, max_size=num_global)))) if n else ()
    )
    if two_d:  # ViL puts its global tokens first, but any positions must work
        n = grid[0] * grid[1] + len(globals_)
    big = draw(st.booleans())
    window = (draw(st.integers(0, 60 if big else 4)), draw(st.integers(0, 60 if big else 4)))
    if draw(st.booleans()):
        dilation = draw(st.integers(1, 3))
    else:
        dilation = tuple(draw(st.integers(1, 3)) for _ in range(heads))
    pattern = AttentionPattern(
        window=window,
        dilation=dilation,
        global_tokens=globals_,
        grid=grid,
        causal=draw(st.booleans()) if not big else False,
    )
    return pattern, n, heads


@settings(max_examples=9, deadline=None)  # ~4 s per example (two implementations compiled per shape)
@given(
    case=patterns(),
    padding=st.booleans(),
    global_proj=st.booleans(),
    seed=st.integers(0, 9),
    block_size=st.sampled_from([None, 1, 3, 8]),
)
def test_banded_matches_dense_outputs_and_grads(case, padding, global_proj, seed, block_size):
    pattern, n, heads = case
    inputs = random_inputs(seed, 2, n, heads, 4, padding=padding, global_proj=global_proj)
    dense = outputs_and_grads("dense", pattern, *inputs)
    banded = outputs_and_grads("banded", pattern, *inputs, block_size=block_size)
    assert_close_tree(dense, banded)


@settings(max_examples=12, deadline=None)
@given(case=patterns())
def test_dense_mask_matches_definition(case):
    pattern, n, heads = case
    expected = mask_by_definition(pattern, n, heads)
    got = np.broadcast_to(np.asarray(dense_mask(pattern, n, heads)), expected.shape)
    np.testing.assert_array_equal(got, expected)


def test_dense_matches_jax_dot_product_attention_with_the_same_mask():
    pattern = AttentionPattern(window=(3, 1), dilation=2, global_tokens=(0, 9))
    (q, k, v), key_mask, _, _ = random_inputs(1, 2, 23, 2, 8, padding=True)
    key_mask = key_mask.at[:, 0].set(True)  # every row keeps at least the global key 0
    mask = dense_mask(pattern, 23, 2)[None] & key_mask[:, None, None, :]
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask)
    got = hybrid_attention(q, k, v, pattern, impl="dense", key_mask=key_mask)
    np.testing.assert_allclose(got, expected, atol=TOL)


@pytest.mark.parametrize("impl", ["dense", "banded", "auto"])
def test_window_wider_than_sequence_is_full_attention(impl):
    (q, k, v), _, _, _ = random_inputs(2, 1, 50, 2, 8)
    got = hybrid_attention(q, k, v, AttentionPattern(window=(4096, 4096)), impl=impl)
    np.testing.assert_allclose(got, jax.nn.dot_product_attention(q, k, v), atol=TOL)


def test_causal_window_matches_jax_local_window():
    (q, k, v), _, _, _ = random_inputs(3, 1, 70, 2, 8)
    got = hybrid_attention(q, k, v, AttentionPattern(window=(5, 0), causal=True), impl="banded")
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=(5, 0))
    np.testing.assert_allclose(got, expected, atol=TOL)


def test_fully_padded_rows_are_zero_and_finite():
    (q, k, v), _, _, cot = random_inputs(4, 1, 20, 1, 4)
    key_mask = jnp.zeros((1, 20), bool).at[0, 15:].set(True)
    pattern = AttentionPattern(window=(2, 2))
    for impl in ("dense", "banded"):
        out, grads = outputs_and_grads(impl, pattern, (q, k, v), key_mask, None, cot)
        assert np.all(np.asarray(out[0, :12]) == 0)
        assert all(np.isfinite(np.asarray(g)).all() for g in grads[:3])


def test_longer_sequence_auto_uses_banded_and_matches():
    pattern = AttentionPattern.longformer(attention_window=64, global_tokens=(0, 700))
    inputs = random_inputs(5, 1, 777, 2, 8, padding=True, global_proj=True)
    assert_close_tree(outputs_and_grads("auto", pattern, *inputs), outputs_and_grads("dense", pattern, *inputs))


@pytest.mark.parametrize(
    "pattern, n",
    [
        # dilation 1 heads take the sliced path, dilation 2 heads the gathered one; both loop over 2 steps
        (AttentionPattern(window=(6, 3), dilation=(1, 2), global_tokens=(0, 150), causal=True), 200),
        (AttentionPattern.vil(12, 12, window=5), 145),
    ],
)
def test_banded_loop_over_several_steps_matches_dense(pattern, n):
    inputs = random_inputs(8, 1, n, 2, 4, padding=True)
    assert_close_tree(
        outputs_and_grads("banded", pattern, *inputs, block_size=8 if pattern.grid is None else 2),
        outputs_and_grads("dense", pattern, *inputs),
    )


def test_vil_pattern_under_vmap_and_jit():
    pattern = AttentionPattern.vil(5, 6, window=5)
    (q, k, v), _, _, _ = random_inputs(6, 3, 31, 2, 4)
    fn = jax.jit(jax.vmap(lambda q, k, v: hybrid_attention(q[None], k[None], v[None], pattern, impl="banded")[0]))
    np.testing.assert_allclose(fn(q, k, v), hybrid_attention(q, k, v, pattern, impl="dense"), atol=TOL)


# ------------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=0), "window=0 must be positive"),
        (dict(window=-4), "must be positive"),
        (dict(window=(-1, 3)), "both extents must be >= 0"),
        (dict(window=(1, 2, 3)), "must be \\(left, right\\)"),
        (dict(window=(1.5, 2)), "window must be an integer"),
        (dict(dilation=0), "dilation"),
        (dict(dilation=()), "dilation"),
        (dict(global_tokens=(-1,)), "global_tokens"),
        (dict(global_tokens=(3, 3)), "distinct"),
        (dict(grid=(0, 4)), "grid"),
        (dict(grid=(4,)), "grid"),
    ],
)
def test_bad_patterns_raise(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AttentionPattern(**kwargs)


def test_bad_calls_raise_clear_errors():
    (q, k, v), _, _, _ = random_inputs(7, 1, 12, 2, 4)
    with pytest.raises(ValueError, match="out of range"):
        hybrid_attention(q, k, v, AttentionPattern(window=2, global_tokens=(12,)), impl="dense")
    with pytest.raises(ValueError, match=r"grid=\(3, 4\) with 1 global token\(s\) needs a sequence of 3\*4\+1=13"):
        hybrid_attention(q, k, v, AttentionPattern(window=2, grid=(3, 4), global_tokens=(0,)), impl="banded")
    with pytest.raises(ValueError, match="mismatched head dims"):
        hybrid_attention(q, k[..., :3], v, AttentionPattern(window=2), impl="dense")
    with pytest.raises(ValueError, match="impl='sparse' is not known"):
        hybrid_attention(q, k, v, AttentionPattern(window=2), impl="sparse")
    with pytest.raises(ValueError, match="per-head dilation needs 2 values"):
        hybrid_attention(q, k, v, AttentionPattern(window=2, dilation=(1, 2, 3)), impl="dense")
    with pytest.raises(ValueError, match="key_mask must be shaped"):
        hybrid_attention(q, k, v, AttentionPattern(window=2), impl="dense", key_mask=jnp.ones((1, 11), bool))
    with pytest.raises(ValueError, match=r"shaped \(batch, seq, heads, head_dim\)"):
        hybrid_attention(q[0], k, v, AttentionPattern(window=2), impl="dense")
    with pytest.raises(TypeError, match="AttentionPattern"):
        hybrid_attention(q, k, v, (2, 2), impl="dense")
