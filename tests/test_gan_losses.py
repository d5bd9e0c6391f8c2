"""GAN losses and the reconstruction MSE against NumPy formulas; the Frechet distance against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from frugal.transforms import gan_losses as gl
from frugal.transforms.frechet import frechet_distance, frechet_distance_gaussians, gaussian_statistics


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Written from the papers' definitions with probabilities, not with softplus as the module does.
NUMPY = {
    "nonsaturating": (
        lambda r, f: -np.mean(np.log(_sigmoid(r))) - np.mean(np.log(1.0 - _sigmoid(f))),
        lambda f: -np.mean(np.log(_sigmoid(f))),
    ),
    "hinge": (
        lambda r, f: -np.mean(np.minimum(0.0, r - 1.0)) - np.mean(np.minimum(0.0, -f - 1.0)),
        lambda f: -np.mean(f),
    ),
    "lsgan": (
        lambda r, f: 0.5 * np.mean((r - 1.0) ** 2) + 0.5 * np.mean(f**2),
        lambda f: 0.5 * np.mean((f - 1.0) ** 2),
    ),
}


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_gan_losses_match_numpy_and_jit(name):
    rng = np.random.default_rng(0)
    real = rng.normal(0.5, 2.0, 7).astype(np.float32)
    fake = rng.normal(-0.5, 2.0, 5).astype(np.float32)  # real and fake batches may differ in size
    d_loss, g_loss = gl.gan_losses(name)
    d_ref, g_ref = NUMPY[name]
    r64, f64 = real.astype(np.float64), fake.astype(np.float64)
    np.testing.assert_allclose(jax.jit(d_loss)(real, fake), d_ref(r64, f64), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(g_loss)(fake), g_ref(f64), rtol=1e-5)
    # Gradients exist and are finite under jit.
    assert np.all(np.isfinite(jax.jit(jax.grad(g_loss))(fake)))


def test_nonsaturating_loss_does_not_overflow_at_large_logits():
    # log(sigmoid(-100)) underflows to -inf in float32 when written naively; softplus keeps it exact.
    d = gl.nonsaturating_d_loss(jnp.array([-100.0]), jnp.array([100.0]))
    np.testing.assert_allclose(d, 200.0, rtol=1e-6)
    np.testing.assert_allclose(gl.nonsaturating_g_loss(jnp.array([-100.0])), 100.0, rtol=1e-6)


def test_mse_reconstruction_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 4, 4, 3)).astype(np.float32), rng.random((2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(gl.mse_reconstruction(a, b), np.mean((a - b) ** 2), rtol=1e-6)


def test_losses_reject_bad_input():
    with pytest.raises(ValueError, match="loss='wgan'"):
        gl.gan_losses("wgan")
    with pytest.raises(ValueError, match="real_logits must be floating-point"):
        gl.hinge_d_loss(jnp.array([1, 2]), jnp.array([0.5]))
    with pytest.raises(ValueError, match="fake_logits is empty"):
        gl.lsgan_g_loss(jnp.zeros((0,)))
    with pytest.raises(ValueError, match="must have one shape"):
        gl.mse_reconstruction(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


# ---------------------------------------------------------------------------------------------
# Frechet distance


def _scipy_reference(a, b):
    """pytorch-fid's formula: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), in float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def test_frechet_distance_is_zero_for_identical_sets():
    feats = np.random.default_rng(2).normal(size=(200, 12)).astype(np.float32)
    value = float(frechet_distance(feats, feats))
    scale = float(np.trace(np.cov(feats, rowvar=False)))
    assert abs(value) < 1e-4 * scale


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For diagonal covariances the distance separates per dimension:
    # sum (mu_a - mu_b)^2 + sum (sqrt(var_a) - sqrt(var_b))^2.
    rng = np.random.default_rng(3)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet_distance_gaussians(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # ... and samples of those Gaussians give the same distance through their fitted statistics.
    a = mu_a + np.sqrt(var_a) * rng.normal(size=(20000, 6))
    b = mu_b + np.sqrt(var_b) * rng.normal(size=(20000, 6))
    np.testing.assert_allclose(frechet_distance(a, b), expected, rtol=0.05)


def test_frechet_distance_matches_scipy_sqrtm_on_correlated_features():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.5
    np.testing.assert_allclose(jax.jit(frechet_distance)(a, b), _scipy_reference(a, b), rtol=1e-3)
    mu, sigma = gaussian_statistics(a)
    np.testing.assert_allclose(sigma, np.cov(a, rowvar=False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mu, a.mean(0), rtol=1e-5, atol=1e-6)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="num_samples, num_features"):
        frechet_distance(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="they must match"):
        frechet_distance(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="must both be"):
        frechet_distance_gaussians(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
