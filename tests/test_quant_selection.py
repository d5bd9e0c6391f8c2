"""ANT type selection: picks int for uniform data, a non-int type for heavy tails, never worse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.transforms.quant import (
    NumericType,
    alpha_ratios,
    mse_sweep,
    normalized_grid,
    quantize,
    select_numeric_type,
)

RNG = np.random.default_rng(0)
DATA = {
    "uniform_signed": RNG.uniform(-1, 1, 4000).astype(np.float32),
    "uniform_unsigned": RNG.uniform(0, 1, 4000).astype(np.float32),
    "laplace": RNG.laplace(size=4000).astype(np.float32),
    "student_t3": RNG.standard_t(3, size=4000).astype(np.float32),
}


def brute_force_best_mse(x, ntype, ratios):
    """Independent numpy sweep: nearest grid value by full distance table, float64 errors."""
    grid = normalized_grid(ntype).astype(np.float64)
    x = np.asarray(x, np.float64)
    best = np.inf
    for ratio in ratios:
        alpha = np.max(np.abs(x)) * float(ratio)
        v = x / alpha
        q = grid[np.abs(v[:, None] - grid[None, :]).argmin(axis=1)] * alpha
        best = min(best, float(np.mean((q - x) ** 2)))
    return best


@pytest.mark.parametrize("name", ["uniform_signed", "uniform_unsigned"])
def test_uniform_data_picks_int(name):
    choice = select_numeric_type(DATA[name], 4)
    assert choice.kind == "int"
    assert choice.signed == (name == "uniform_signed")
    assert choice.mse == min(choice.mse_per_candidate.values())


@pytest.mark.parametrize("name", ["laplace", "student_t3"])
def test_heavy_tailed_data_picks_a_non_int_type_with_lower_mse(name):
    choice = select_numeric_type(DATA[name], 4, ("int", "pot", "flint", "float"))
    assert choice.kind != "int"
    assert choice.mse < choice.mse_per_candidate["int"]
    assert set(choice.mse_per_candidate) == {"int", "pot", "flint", "float"}


@pytest.mark.parametrize("name", sorted(DATA))
def test_sweep_matches_brute_force_and_never_loses_to_int(name):
    x = DATA[name][:1000]
    choice = select_numeric_type(x, 4)
    ratios = alpha_ratios()
    for kind in ("int", "flint"):
        expected = brute_force_best_mse(x, NumericType(kind, 4, choice.signed), ratios)
        np.testing.assert_allclose(choice.mse_per_candidate[kind], expected, rtol=2e-3)
    assert choice.mse <= choice.mse_per_candidate["int"]
    # The returned alpha reproduces the returned error through the public quantizer.
    q = np.asarray(quantize(jnp.asarray(x), choice.ntype, choice.alpha))
    np.testing.assert_allclose(np.mean((q - x) ** 2), choice.mse, rtol=1e-3)
    assert 0.75 * np.abs(x).max() * (1 - 1e-6) <= choice.alpha < 1.5 * np.abs(x).max()


def test_per_channel_selection():
    # Columns with very different ranges: one alpha per output channel (axis -1).
    w = (RNG.laplace(size=(64, 6)) * np.array([1, 5, 0.1, 2, 7, 0.5])).astype(np.float32)
    choice = select_numeric_type(w, 4, axis=-1)
    assert choice.alpha.shape == (6,) and choice.signed
    q = np.asarray(quantize(jnp.asarray(w), choice.ntype, jnp.asarray(choice.alpha), axis=-1))
    per_channel = np.mean((q - w) ** 2, axis=0)
    np.testing.assert_allclose(per_channel.mean(), choice.mse, rtol=1e-3)
    # Per-channel clipping can only help compared with one alpha for the whole tensor.
    whole = select_numeric_type(w, 4, (choice.kind,))
    assert choice.mse <= whole.mse


def test_options_signed_range_and_numeric_type_candidates():
    x = DATA["uniform_unsigned"]
    forced = select_numeric_type(x, 4, ("int",), signed=True)
    assert forced.signed and forced.ntype == NumericType("int", 4, True)
    assert forced.mse > select_numeric_type(x, 4, ("int",)).mse  # the unsigned grid is finer
    narrow = select_numeric_type(x, 4, ("int",), alpha_range=(1.0, 1.01), alpha_step=0.01)
    assert narrow.alpha == pytest.approx(float(np.abs(x).max()))
    e2m1 = NumericType("float", 4, True, exponent_bits=2)
    choice = select_numeric_type(DATA["laplace"], 4, ("int", e2m1))
    assert set(choice.mse_per_candidate) == {"int", e2m1.name}
    assert len(alpha_ratios()) == 75 and alpha_ratios()[0] == pytest.approx(0.75)
    assert alpha_ratios()[-1] == pytest.approx(1.49)


def test_eight_bit_int_is_nearly_lossless():
    choice = select_numeric_type(DATA["laplace"], 8, ("int",), alpha_range=(0.95, 1.5))
    assert choice.mse < 1e-3 * np.var(DATA["laplace"])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(x=np.array([], np.float32), bits=4), ValueError),
        (dict(x=np.array([1.0, np.nan]), bits=4), ValueError),
        (dict(x=np.array([1.0, np.inf]), bits=4), ValueError),
        (dict(x=np.ones(4), bits=1), ValueError),
        (dict(x=np.ones(4), bits=9), ValueError),
        (dict(x=np.ones(4), bits=4, candidates=("int", "posit")), ValueError),
        (dict(x=np.ones(4), bits=4, candidates=()), ValueError),
        (dict(x=np.ones(4), bits=4, candidates=(3,)), TypeError),
        (dict(x=np.ones(4), bits=4, alpha_range=(1.5, 0.75)), ValueError),
        (dict(x=np.ones(4), bits=4, alpha_step=0.0), ValueError),
        (dict(x=np.ones(4), bits=4, axis=2), ValueError),
        (dict(x=np.array(["a"]), bits=4), TypeError),
    ],
)
def test_bad_input_raises(kwargs, error):
    with pytest.raises(error):
        select_numeric_type(**kwargs)


def test_under_jit_raises_a_clear_error():
    with pytest.raises(TypeError, match="outside jax.jit"):
        jax.jit(lambda x: select_numeric_type(x, 4).mse)(jnp.ones(4))


def test_olive_candidates_win_on_heavy_tails_and_lose_on_uniform():
    kinds = ("int", "flint", "olive", "olive-int")
    heavy = select_numeric_type(DATA["student_t3"], 4, kinds)
    assert heavy.kind in ("olive", "olive-int") and heavy.mse < heavy.mse_per_candidate["flint"]
    uniform = select_numeric_type(DATA["uniform_unsigned"], 4, kinds)
    assert uniform.kind == "int" and not uniform.signed
    assert uniform.mse_per_candidate["olive"] > uniform.mse  # OliVe is signed: coarser here
    # The alpha sweep for OliVe is relative to the 3-sigma point, as in its reference.
    x = DATA["student_t3"]
    three_sigma = max(abs(x.mean() + 3 * x.std(ddof=1)), abs(x.mean() - 3 * x.std(ddof=1)))
    assert 0.75 * three_sigma * 0.999 <= heavy.alpha_per_candidate["olive"] < 2.5 * three_sigma
    q = np.asarray(quantize(jnp.asarray(x), heavy.ntype, heavy.alpha))
    np.testing.assert_allclose(np.mean((q - x) ** 2), heavy.mse, rtol=1e-3)


@pytest.mark.parametrize("bits, axis", [(4, None), (8, None), (4, 1)])
def test_sorted_sweep_equals_elementwise_quantization(bits, axis):
    # The sweep scores alphas from sorted prefix sums; check every entry against quantize().
    x = RNG.laplace(size=(50, 6)).astype(np.float32)
    types = [NumericType(k, bits, True) for k in ("int", "pot", "flint", "float")]
    base = np.abs(x).max() if axis is None else np.abs(x).max(axis=0)
    ratios = np.array([0.5, 0.8, 1.0, 1.3], np.float32)
    alphas = np.stack([np.outer(ratios, np.atleast_1d(base))] * len(types)).astype(np.float32)
    errors = mse_sweep(x, types, alphas, axis=axis)
    assert errors.shape == (len(types), len(ratios), 1 if axis is None else 6)
    for c, t in enumerate(types):
        for a in range(len(ratios)):
            alpha = alphas[c, a] if axis is not None else alphas[c, a, 0]
            q = np.asarray(quantize(jnp.asarray(x), t, jnp.asarray(alpha), axis=axis))
            expected = np.mean((q.astype(np.float64) - x) ** 2, axis=None if axis is None else 0)
            np.testing.assert_allclose(errors[c, a], np.atleast_1d(expected), rtol=1e-4, atol=1e-12)
