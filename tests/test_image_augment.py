"""Baseline augmentations (NPR, blur, image noise, frequency band) against NumPy and scipy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from frugal.transforms.image_augment import (
    NPR_SCALE,
    frequency_augment,
    gaussian_blur,
    image_noise,
    npr_residual,
)

LABELS = np.array([0, 1, 1, 0, 1])


def _images(seed=0, n=5, h=8, w=8, c=3):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, h, w, c)).astype(np.float32)


@pytest.mark.parametrize("factor", [2, 4])
def test_npr_matches_a_numpy_loop(factor):
    x = _images()
    expected = np.empty_like(x)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            # PyTorch nearest down-sampling keeps the top-left pixel of each block (source index floor(i * f)).
            expected[:, i, j] = x[:, i, j] - x[:, factor * (i // factor), factor * (j // factor)]
    np.testing.assert_allclose(npr_residual(x, factor), expected * NPR_SCALE, atol=1e-7)
    np.testing.assert_allclose(npr_residual(x, factor, scale=1.0), expected, atol=1e-7)


def test_npr_of_a_nearest_upsampled_image_is_zero_and_its_gradient_is_exact():
    coarse = _images(1, h=4, w=4)
    up = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)
    assert float(jnp.abs(npr_residual(up)).max()) == 0.0
    # d sum(NPR) / dx: each pixel counts once, and the block's anchor is subtracted 4 times.
    grad = jax.grad(lambda v: npr_residual(v, scale=1.0).sum())(up)
    anchor = np.zeros(up.shape[1:3], bool)
    anchor[::2, ::2] = True
    np.testing.assert_allclose(grad, np.broadcast_to(np.where(anchor, -3.0, 1.0)[None, :, :, None], up.shape))


def test_blur_matches_scipy_reflect_for_fixed_sigmas():
    x = _images(2, h=8, w=9)
    sigmas = np.array([0.0, 0.1, 0.7, 1.5, 3.0], np.float32)  # 3.0: radius 12 > 9 pixels, the reflection repeats
    out = np.asarray(gaussian_blur(jax.random.key(0), x, sigma=sigmas, prob=1.0))
    for i, s in enumerate(sigmas):
        ref = ndimage.gaussian_filter(x[i].astype(np.float64), sigma=(float(s), float(s), 0.0), mode="reflect")
        np.testing.assert_allclose(out[i], ref, atol=2e-6, err_msg=f"sigma={s}")


def test_blur_probability_labels_and_jit():
    x = _images(3)
    key = jax.random.key(1)
    np.testing.assert_array_equal(gaussian_blur(key, x, prob=0.0), x)
    out = np.asarray(gaussian_blur(key, x, LABELS, prob=1.0, sigma=np.full(5, 1.0, np.float32)))
    np.testing.assert_array_equal(out[LABELS == 0], x[LABELS == 0])
    assert np.all(np.abs(out - x)[LABELS == 1].max(axis=(1, 2, 3)) > 0.05)
    jitted = jax.jit(lambda k, v: gaussian_blur(k, v, prob=0.5))(key, x)
    np.testing.assert_allclose(jitted, gaussian_blur(key, x, prob=0.5), atol=1e-6)


def test_image_noise_scale_labels_and_range():
    x = np.full((5, 8, 8, 3), 0.5, np.float32)
    key = jax.random.key(2)
    np.testing.assert_array_equal(image_noise(key, x, prob=0.0), x)
    out = np.asarray(image_noise(key, x, LABELS, sigma_min=0.05, sigma_max=0.05, prob=1.0))
    np.testing.assert_array_equal(out[LABELS == 0], x[LABELS == 0])
    residual = (out - x)[LABELS == 1]
    assert abs(residual.std() - 0.05) < 0.006  # 576 samples: sd of the estimate ~0.0015
    wide = np.asarray(image_noise(key, _images(4), sigma_min=0.5, sigma_max=0.5, prob=1.0))
    assert wide.min() == 0.0 and wide.max() == 1.0
    default = np.asarray(image_noise(key, x, prob=1.0))  # the authors' sigma ~ U[1e-4, 1e-2]
    assert 1e-4 / 3 < (default - x).std() < 1e-2


def _frequency_reference(key, x, prob, min_radius, max_width, gain_range):
    """Replays the documented sub-keys and filters with numpy.fft in float64."""
    n, h, w, _ = x.shape
    k_apply, k_r0, k_width, k_gain = jax.random.split(key, 4)
    apply = np.asarray(jax.random.uniform(k_apply, (n,)) < prob)
    r0 = np.asarray(jax.random.uniform(k_r0, (n, 1, 1, 1), jnp.float32, min_radius, 1.0))
    width = np.asarray(jax.random.uniform(k_width, (n, 1, 1, 1), jnp.float32, 0.0, max_width))
    gain = np.asarray(jax.random.uniform(k_gain, (n, 1, 1, 1), jnp.float32, *gain_range))
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])[None, :, :, None] / 0.5
    band = (radius >= r0) & (radius < r0 + width)
    filtered = np.fft.ifft2(np.fft.fft2(x.astype(np.float64), axes=(1, 2)) * np.where(band, gain, 1.0), axes=(1, 2))
    assert np.abs(filtered.imag).max() < 1e-12  # the band is symmetric, so the image stays real
    return np.where(apply[:, None, None, None], filtered.real, x)


def test_frequency_augment_matches_numpy_and_keeps_the_mean():
    x = _images(5, h=16, w=16)
    key = jax.random.key(3)
    options = dict(min_radius=0.25, max_width=0.75, gain_range=(0.0, 3.0))
    out = np.asarray(frequency_augment(key, x, prob=0.8, clip=False, **options))
    np.testing.assert_allclose(out, _frequency_reference(key, x, 0.8, **options), atol=1e-5)
    assert np.abs(out - x).max() > 0.05
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-6)  # DC kept
    clipped = np.asarray(frequency_augment(key, x, prob=0.8, **options))
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    np.testing.assert_array_equal(frequency_augment(key, x, prob=0.0), x)
    only_fakes = np.asarray(frequency_augment(key, x, LABELS, prob=1.0, **options))
    np.testing.assert_array_equal(only_fakes[LABELS == 0], x[LABELS == 0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k, x: npr_residual(x[:, :7]), "multiples of factor=2"),
        (lambda k, x: npr_residual(x, factor=1), "factor must be an int >= 2"),
        (lambda k, x: npr_residual(x[0]), "images must be a 4-D"),
        (lambda k, x: gaussian_blur(k, x, prob=1.5), r"prob=1.5 must lie in \[0, 1\]"),
        (lambda k, x: gaussian_blur(k, x, sigma_max=-1.0), "sigma_max must be >= 0"),
        (lambda k, x: gaussian_blur(k, x, sigma=np.ones(3)), r"sigma must have shape \(5,\)"),
        (lambda k, x: gaussian_blur(k, x, LABELS[:4]), r"labels must have shape \(5,\)"),
        (lambda k, x: image_noise(k, x, prob=-0.5), "prob=-0.5"),
        (lambda k, x: image_noise(k, x, sigma_min=0.2, sigma_max=0.1), "sigma_min <= sigma_max"),
        (lambda k, x: image_noise(k, x.astype(np.uint8)), "must be float images"),
        (lambda k, x: frequency_augment(k, x, min_radius=0.0), "min_radius must lie in"),
        (lambda k, x: frequency_augment(k, x, gain_range=(2.0, 1.0)), "gain_range"),
        (lambda k, x: frequency_augment(k, x, max_width=-0.1), "max_width must be >= 0"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(jax.random.key(0), _images())
