"""Fingerprint-domain augmentation (arXiv 2212.13466) against a NumPy loop over the same draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.transforms.fingerprint import (
    PerturbConfig,
    draw_perturbations,
    fingerprint,
    perturb_fingerprints,
)

LABELS = np.array([0, 1, 1, 0, 1, 1])


def _images(seed=0, n=6, h=8, w=8, c=3):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, h, w, c)).astype(np.float32)


def _reconstruct(x):
    # A stand-in "autoencoder": a contraction towards grey plus a neighbour average (a low-pass).
    return 0.6 * x + 0.2 + 0.1 * (jnp.roll(x, 1, axis=1) - x)


def _numpy_reference(x, labels, draws, config):
    """Row by row, the formulas of the module docstring, in float64."""
    x = np.asarray(x, np.float64)
    content = np.asarray(_reconstruct(jnp.asarray(x, jnp.float32)), np.float64)
    fp = x - content
    d = jax.tree.map(np.asarray, draws)
    out = x.copy()
    for i in range(x.shape[0]):
        mode = config.modes[d.mode_index[i]]
        if labels[i] != 1 or not d.apply[i] or mode == "none":
            continue
        if mode == "noise":
            new = (fp[i] + d.noise_std[i] * d.noise[i]) * d.noise_scale[i]
        elif mode == "mut":
            new = fp[i] * d.mut_scale[i]
        else:
            w = d.own_weight[i]
            other = 1.0 if config.mix_weight == "reference" else 1.0 - w
            new = w * fp[i] + other * fp[d.partner[i]]
        out[i] = np.clip(content[i] + new, 0.0, 1.0)
    return out


def test_fingerprint_splits_into_content_and_residual():
    x = _images()
    content, fp = fingerprint(x, _reconstruct)
    np.testing.assert_allclose(content, _reconstruct(jnp.asarray(x)), atol=1e-7)
    np.testing.assert_allclose(content + fp, x, atol=1e-6)
    assert float(jnp.abs(fp).max()) > 0.05
    _, zero = fingerprint(x, lambda v: v)
    assert float(jnp.abs(zero).max()) == 0.0


@pytest.mark.parametrize(
    "options",
    [
        dict(mode="noise"),
        dict(mode="mut", mut_range=2.0),
        dict(mode="mix"),
        dict(mode="mix", mix_weight="reference", mix_from="batch", mix_min_weight=0.2),
        dict(mode=("mut", "mix", "noise", "none")),
    ],
)
def test_perturbation_matches_numpy_on_the_same_draws(options):
    config = PerturbConfig(prob=1.0, **options)
    x = _images(1)
    key = jax.random.key(3)
    out = perturb_fingerprints(key, x, LABELS, _reconstruct, config=config)
    draws = draw_perturbations(key, LABELS, x.shape, config)
    np.testing.assert_allclose(out, _numpy_reference(x, LABELS, draws, config), atol=2e-6)
    # Reals are untouched, bit for bit; draws lie in their documented ranges.
    np.testing.assert_array_equal(np.asarray(out)[LABELS == 0], x[LABELS == 0])
    assert not np.any(np.asarray(draws.apply)[LABELS == 0])
    assert np.all((draws.noise_std >= 1e-4) & (draws.noise_std <= 1e-2))
    assert np.all(np.abs(draws.noise_scale) <= 2.0) and np.all(np.abs(draws.mut_scale) <= config.mut_range)
    assert np.all((config.mix_min_weight <= draws.own_weight) & (draws.own_weight <= 1.0))
    if "mix" in config.modes:
        partner = np.asarray(draws.partner)
        assert np.all(partner != np.arange(len(LABELS)))
        if config.mix_from == "fakes":
            assert np.all(LABELS[partner] == 1)


def test_prob_zero_is_identity_and_prob_one_changes_every_fake():
    x = _images(2)
    key = jax.random.key(0)
    for mode in ("noise", "mut", "mix"):
        same = perturb_fingerprints(key, x, LABELS, _reconstruct, mode=mode, prob=0.0)
        np.testing.assert_array_equal(same, x)
        changed = np.asarray(perturb_fingerprints(key, x, LABELS, _reconstruct, mode=mode, prob=1.0))
        np.testing.assert_array_equal(changed[LABELS == 0], x[LABELS == 0])
        assert np.all(np.abs(changed - x).reshape(len(x), -1).max(axis=1)[LABELS == 1] > 1e-3), mode
    none = perturb_fingerprints(key, x, LABELS, _reconstruct, mode="none", prob=1.0)
    np.testing.assert_array_equal(none, x)


def test_output_is_clipped_to_the_unit_range():
    x = _images(3)
    out = np.asarray(perturb_fingerprints(jax.random.key(1), x, LABELS, _reconstruct, mode="mut", mut_range=50.0))
    assert out.min() == 0.0 and out.max() == 1.0  # k = 50 pushes many pixels past the range


def test_mix_partners_and_the_single_fake_case():
    x = _images(3)
    batch = PerturbConfig(mode="mix", prob=1.0, mix_from="batch")
    partners = [np.asarray(draw_perturbations(jax.random.key(i), LABELS, x.shape, batch).partner) for i in range(8)]
    assert np.any(LABELS[np.stack(partners)] == 0)  # "batch" can mix in a real image's residual (the reference's way)
    one_fake = np.array([0, 0, 1, 0, 0, 0])
    config = PerturbConfig(mode="mix", prob=1.0)
    draws = draw_perturbations(jax.random.key(0), one_fake, x.shape, config)
    assert int(draws.partner[2]) == 2  # mixes with itself: the convex mix leaves F as it is
    out = perturb_fingerprints(jax.random.key(0), x, one_fake, _reconstruct, config=config)
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_jit_of_vmap_matches_eager_and_draw_frequencies_match_prob_and_modes():
    # One compiled program over 200 keys: the outputs of a few keys against eager calls, and the
    # 1200 rows' draws against the configured probabilities.
    config = PerturbConfig(mode=("mut", "mix", "noise", "none"), prob=0.6)
    stack = np.stack([_images(4), _images(5)] * 100)  # batches alternate, so vmap maps images too

    def run(key, x):
        return perturb_fingerprints(key, x, LABELS, _reconstruct, config=config), draw_perturbations(
            key, LABELS, x.shape, config
        )

    keys = jax.random.split(jax.random.key(7), 200)
    outs, draws = jax.jit(jax.vmap(run))(keys, stack)
    for i in range(2):
        np.testing.assert_allclose(
            outs[i], perturb_fingerprints(keys[i], stack[i], LABELS, _reconstruct, config=config), atol=1e-6
        )
    mode_index, apply = np.asarray(draws.mode_index).ravel(), np.asarray(draws.apply)
    counts = np.bincount(mode_index, minlength=4)
    assert np.all(counts > 220), counts  # 300 expected each, sd 15
    fake = np.broadcast_to(LABELS == 1, apply.shape)
    assert not np.any(apply[~fake]) and not np.any(apply.ravel()[mode_index == 3])
    fraction = apply[fake].mean()
    assert abs(fraction - 0.6 * 3 / 4) < 0.07, fraction  # 800 fakes: sd 0.018


def test_gradient_flows_through_the_perturbation():
    # With AE(x) = x / 2 and mut, a perturbed row is x/2 + m x/2: d out / dx = (1 + m) / 2, unclipped here.
    x = np.random.default_rng(8).uniform(0.4, 0.6, (6, 8, 8, 3)).astype(np.float32)
    config = PerturbConfig(mode="mut", prob=1.0, mut_range=0.5)
    key = jax.random.key(9)
    half = lambda v: 0.5 * v
    grad = jax.grad(lambda v: perturb_fingerprints(key, v, LABELS, half, config=config).sum())(x)
    m = np.asarray(draw_perturbations(key, LABELS, x.shape, config).mut_scale)
    expected = np.where(LABELS == 1, 0.5 * (1 + m), 1.0)[:, None, None, None] * np.ones_like(x)
    np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="blur"), "mode 'blur' is unknown"),
        (dict(mode=()), "non-empty"),
        (dict(mode="mut", prob=1.5), r"prob=1.5 must lie in \[0, 1\]"),
        (dict(mode="mut", prob=-0.1), "prob=-0.1"),
        (dict(mode="mut", mut_range=0.0), "mut_range .* must be > 0"),
        (dict(mode="noise", noise_std_range=(0.1, 0.01)), "noise_std_range"),
        (dict(mode="mix", mix_min_weight=1.5), "mix_min_weight"),
        (dict(mode="mix", mix_weight="sum"), "mix_weight 'sum' is unknown"),
        (dict(mode="mix", mix_from="reals"), "mix_from 'reals' is unknown"),
        (dict(), "mode is required"),
        (dict(mode="mut", strength=2.0), "unknown options"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        perturb_fingerprints(jax.random.key(0), _images(), LABELS, _reconstruct, **kwargs)


def test_bad_arrays_raise():
    key, x = jax.random.key(0), _images()
    with pytest.raises(ValueError, match="images must be a 4-D"):
        perturb_fingerprints(key, x[0], LABELS, _reconstruct, mode="mut")
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        perturb_fingerprints(key, x, LABELS[:5], _reconstruct, mode="mut")
    with pytest.raises(ValueError, match="reconstruct must return the shape"):
        perturb_fingerprints(key, x, LABELS, lambda v: v[:, :4], mode="mut")
    with pytest.raises(ValueError, match="either config= or"):
        perturb_fingerprints(key, x, LABELS, _reconstruct, mode="mut", config=PerturbConfig())
