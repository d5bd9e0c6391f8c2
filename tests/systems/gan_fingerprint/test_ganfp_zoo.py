"""The zoo's training loop (Trainer run, bit-identical resume), sampling, the feature net and the spectra."""

import jax
import numpy as np
import pytest
from flax import nnx

from frugal.models.gan_zoo import Resynthesizer
from frugal.scripts.systems.gan_fingerprint import spectra, zoo
from frugal.transforms.frechet import frechet_distance

SIZE = 8  # one up-sampling stage: the smallest GAN, the quickest compile


def _smooth_patches(n: int, seed: int) -> np.ndarray:
    """Blurred noise in [0, 1]: patch-like images with most energy at low frequencies."""
    x = np.random.default_rng(seed).random((n, SIZE + 2, SIZE + 2, 3))
    x = sum(x[:, i : i + SIZE, j : j + SIZE] for i in range(3) for j in range(3)) / 9.0
    return x.astype(np.float32)


PATCHES = _smooth_patches(32, 0)


def _train(steps, workdir=None, checkpoint_every=0):
    # An "rbg" key for the initialization: threefry initializers are slow to compile on CPU.
    return zoo.train_family(
        "tconv",
        PATCHES,
        steps=steps,
        width=4,
        batch_size=8,
        latent_dim=8,
        seed=0,
        init_key=jax.random.key(0, impl="rbg"),
        workdir=workdir,
        checkpoint_every=checkpoint_every,
        log_every=1,
    )


@pytest.fixture(scope="module")
def straight():
    return _train(3)


def _leaves(module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module))]  # parameters and batch statistics


def test_gan_family_trains_and_resumes_bit_identically(straight, tmp_path):
    assert [h["step"] for h in straight.history] == [1, 2, 3]
    for record in straight.history:
        assert all(np.isfinite(record[k]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    first = _train(2, tmp_path, checkpoint_every=1)
    assert first.start_step == 0
    resumed = _train(3, tmp_path, checkpoint_every=1)
    assert resumed.start_step == 2 and [h["step"] for h in resumed.history] == [3]
    for a, b in zip(
        _leaves(straight.model) + _leaves(straight.discriminator),
        _leaves(resumed.model) + _leaves(resumed.discriminator),
    ):
        np.testing.assert_array_equal(a, b)
    # ... and the training really changed the generator.
    fresh, _ = zoo.make_family("tconv", width=4, image_size=SIZE, latent_dim=8, seed=jax.random.key(0, impl="rbg"))
    assert any(np.any(a != b) for a, b in zip(_leaves(fresh), _leaves(straight.model)))


def test_samples_are_deterministic_images(straight):
    a = zoo.sample_family(straight.model, 5, seed=3, batch_size=4)  # two chunks, the last one padded
    assert a.shape == (5, SIZE, SIZE, 3) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, zoo.sample_family(straight.model, 5, seed=3, batch_size=4))
    np.testing.assert_array_equal(a[:3], zoo.sample_family(straight.model, 3, seed=3, batch_size=4))
    assert np.any(a != zoo.sample_family(straight.model, 5, seed=4, batch_size=4))


def test_sampling_a_resynthesizer_needs_real_images():
    resynth = nnx.eval_shape(lambda: Resynthesizer(2, "nearest", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="real_images is required"):
        zoo.sample_family(resynth, 4, seed=0)
    with pytest.raises(ValueError, match="n=0"):
        zoo.sample_family(resynth, 0, seed=0)


def test_feature_network_is_fixed_and_separates_noise_from_patches():
    key = jax.random.key(0, impl="rbg")
    features = zoo.feature_network(key, width=4)
    real_a, real_b = PATCHES, _smooth_patches(32, 1)
    fa = features(real_a)
    assert fa.shape == (32, 7 * 4)
    np.testing.assert_array_equal(fa, zoo.feature_network(key, width=4)(real_a))
    noise = np.random.default_rng(2).random(real_a.shape, np.float32)
    assert float(frechet_distance(fa, features(noise))) > 5 * float(frechet_distance(fa, features(real_b)))


def test_mean_spectrum_matches_a_numpy_loop():
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2))
    ref = np.zeros((8, 8))
    for n in range(3):
        for c in range(2):
            img = x[n, :, :, c] - x[n, :, :, c].mean()
            ref += np.abs(np.fft.fft2(img)) / 6
    ref = np.log(ref + 1e-8)
    ref = np.roll(ref, (4, 4), axis=(0, 1))  # zero frequency to the centre
    np.testing.assert_allclose(spectra.mean_spectrum(x), ref, rtol=1e-12, atol=1e-6)
    # Without mean removal a constant image puts everything at the centre.
    flat = spectra.mean_spectrum(np.ones((1, 8, 8)), subtract_mean=False)
    assert np.unravel_index(np.argmax(flat), flat.shape) == (4, 4)


def test_peak_contrast_finds_planted_periodic_patterns():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(16, 32, 32, 3)) * 0.1
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    checker = ((-1.0) ** (i + j))[None, :, :, None]
    period4 = np.cos(np.pi * i / 2)[None, :, :, None] + np.cos(np.pi * j / 2)[None, :, :, None]
    assert spectra.peak_positions((8, 8), 2) == [(4, 0), (0, 4), (0, 0)]
    plain = spectra.mean_spectrum(base)
    assert abs(spectra.peak_contrast(plain, 2)) < 0.3 and abs(spectra.peak_contrast(plain, 4)) < 0.3
    assert spectra.peak_contrast(spectra.mean_spectrum(base + 0.05 * checker), 2) > 0.5
    assert spectra.peak_contrast(spectra.mean_spectrum(base + 0.05 * period4), 4) > 0.5
    with pytest.raises(ValueError, match="period=3"):
        spectra.peak_contrast(plain, 3)
    with pytest.raises(ValueError, match="NaN"):
        spectra.mean_spectrum(np.full((1, 4, 4), np.nan))
