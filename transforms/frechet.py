"""Frechet distance between two sets of feature vectors, each summarized as a Gaussian.

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})

(Dowson & Landau 1982; used on Inception features as FID by Heusel et al. 2017, arXiv 1706.08500,
reference code github.com/bioinf-jku/TTUR and github.com/mseitzer/pytorch-fid). The feature network is
the caller's choice: any fixed map from images to vectors gives a "Frechet distance in that space".

The reference implementations take `scipy.linalg.sqrtm(S_a S_b)`, which is a general (non-symmetric)
matrix square root and may return small imaginary parts. Here the trace is computed from symmetric
matrices only: S_a S_b is similar to the positive semi-definite M = S_a^{1/2} S_b S_a^{1/2}, so
tr((S_a S_b)^{1/2}) = sum sqrt(eig(M)), with two `eigh` calls and tiny negative eigenvalues (rounding)
clipped at zero. It is plain jax.numpy (its cores are jitted, one compile per feature width): it
works under jit and in float64 when x64 is enabled. Like FID, the value returned is the squared
distance d^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["frechet_distance", "frechet_distance_gaussians", "gaussian_statistics"]


def _features(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (num_samples, num_features) array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} has {x.shape[0]} samples; a covariance needs at least 2")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


@jax.jit
def _statistics(x):
    mu = jnp.mean(x, axis=0)
    centered = x - mu
    return mu, centered.T @ centered / (x.shape[0] - 1)


def gaussian_statistics(features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sample mean and unbiased covariance (rows are samples, as `np.cov(features, rowvar=False)`)."""
    return _statistics(_features(features, "features"))


def _psd_sqrt(sigma: jax.Array) -> jax.Array:
    values, vectors = jnp.linalg.eigh(sigma)
    return (vectors * jnp.sqrt(jnp.clip(values, 0.0))) @ vectors.T


@jax.jit
def _frechet_gaussians(mu_a, sigma_a, mu_b, sigma_b):
    # Symmetrize: a covariance computed in floating point is symmetric only up to rounding.
    sigma_a = 0.5 * (sigma_a + sigma_a.T)
    sigma_b = 0.5 * (sigma_b + sigma_b.T)
    root_a = _psd_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    trace_sqrt = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0)))
    diff = mu_a - mu_b
    return diff @ diff + jnp.trace(sigma_a) + jnp.trace(sigma_b) - 2.0 * trace_sqrt


def frechet_distance_gaussians(mu_a, sigma_a, mu_b, sigma_b) -> jax.Array:
    """Squared Frechet (2-Wasserstein) distance between N(mu_a, sigma_a) and N(mu_b, sigma_b)."""
    mu_a, mu_b = jnp.asarray(mu_a), jnp.asarray(mu_b)
    sigma_a, sigma_b = jnp.asarray(sigma_a), jnp.asarray(sigma_b)
    d = mu_a.shape[-1] if mu_a.ndim else 0
    if mu_a.ndim != 1 or mu_b.shape != mu_a.shape:
        raise ValueError(f"mu_a {mu_a.shape} and mu_b {mu_b.shape} must be vectors of one length")
    if sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(f"sigma_a {sigma_a.shape} and sigma_b {sigma_b.shape} must both be ({d}, {d})")
    return _frechet_gaussians(mu_a, sigma_a, mu_b, sigma_b)


def frechet_distance(feats_a: jax.Array, feats_b: jax.Array) -> jax.Array:
    """Frechet distance between the Gaussians fitted to two (num_samples, num_features) feature sets.

    Like FID it is biased upwards at small sample counts (the covariance estimate is noisy), so only
    compare distances computed with the same number of samples and the same feature network.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_a has {a.shape[1]} features per sample and feats_b {b.shape[1]}; they must match")
    return frechet_distance_gaussians(*gaussian_statistics(a), *gaussian_statistics(b))
