"""CNNDetection's host-side Blur+JPEG: Pillow's real codec, scipy's blur, the reference's draw order."""

import numpy as np
import pytest
from scipy import ndimage

from frugal.scripts.systems.gan_fingerprint.jpeg import blur_jpeg, gaussian_blur, jpeg_compress, random_jpeg


def _smooth(n=4, size=32, channels=3, seed=0):
    """Smooth tinted fields: one low-frequency luminance sinusoid per image, each channel offset by a
    constant tint (chroma that varies fast would be blurred by JPEG's 4:2:0 subsampling at any quality)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, channels), np.float32)
    for i in range(n):
        fy, fx, phase = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        wave = 0.3 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
        for c in range(channels):
            out[i, :, :, c] = 0.5 + wave + rng.uniform(-0.15, 0.15)
    return out


def test_jpeg_quality_100_is_close_and_30_is_not():
    x = _smooth()
    high = jpeg_compress(x, 100)
    low = jpeg_compress(x, 30)
    assert high.shape == x.shape and high.dtype == np.float32 and low.dtype == np.float32
    assert low.min() >= 0.0 and low.max() <= 1.0
    assert np.abs(high - x).mean() < 0.004  # 8-bit rounding (~0.001) plus 4:2:0 chroma
    assert np.abs(low - x).mean() > 3 * np.abs(high - x).mean()
    np.testing.assert_array_equal(np.rint(low * 255) / 255, low)  # decoded bytes, exactly
    grey = jpeg_compress(x[..., :1], [100, 90, 60, 30])  # one quality per image, one channel
    assert grey.shape == (4, 32, 32, 1) and np.abs(grey[0] - x[0, ..., :1]).mean() < 0.003


def test_random_jpeg_probability_and_seed():
    x = _smooth(6)
    np.testing.assert_array_equal(random_jpeg(np.random.default_rng(0), x, prob=0.0), x)
    every = random_jpeg(np.random.default_rng(0), x, prob=1.0)
    assert np.all(np.abs(every - x).reshape(6, -1).max(axis=1) > 0)
    np.testing.assert_array_equal(every, random_jpeg(np.random.default_rng(0), x, prob=1.0))
    assert not np.array_equal(every, random_jpeg(np.random.default_rng(1), x, prob=1.0))


def test_blur_jpeg_replays_the_reference_draws_blur_first():
    x = _smooth(5)
    out = blur_jpeg(np.random.default_rng(7), x, 0.5, blur_prob=0.6, jpeg_prob=0.7)
    replay = np.random.default_rng(7)
    expected, blurred, jpegged = x.copy(), 0, 0
    for i in range(len(x)):
        image = x[i]
        if replay.random() < 0.6:
            image = np.clip(ndimage.gaussian_filter(image.astype(np.float64), (s := 3.0 * replay.random(), s, 0)), 0, 1)
            blurred += 1
        if replay.random() < 0.7:
            quality = int(replay.integers(30, 101))
            assert 30 <= quality <= 100
            image = jpeg_compress(image[None].astype(np.float32), quality)[0]
            jpegged += 1
        expected[i] = image
    assert 0 < blurred < 5 and 0 < jpegged < 5  # seed 7 exercises both branches both ways
    np.testing.assert_allclose(out, expected, atol=1e-6)
    reference = ndimage.gaussian_filter(x[0].astype(np.float64), (1.5, 1.5, 0), mode="reflect")
    np.testing.assert_allclose(gaussian_blur(x[0], 1.5), reference)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: jpeg_compress((x * 255).astype(np.uint8), 90), "must be float"),
        (lambda x: jpeg_compress(x[0], 90), "4-D NHWC batch with 1 or 3 channels"),
        (lambda x: jpeg_compress(x[..., :2], 90), "1 or 3 channels"),
        (lambda x: jpeg_compress(x + 0.5, 90), r"must lie in \[0, 1\]"),
        (lambda x: jpeg_compress(x, 101), "quality must be an int in"),
        (lambda x: jpeg_compress(x, 50.5), "quality must be an int in"),
        (lambda x: random_jpeg(np.random.default_rng(0), x, prob=1.5), r"jpeg_prob=1.5 must lie in \[0, 1\]"),
        (lambda x: blur_jpeg(0, x), "rng must be a numpy.random.Generator"),
        (lambda x: blur_jpeg(np.random.default_rng(0), x, sigma_range=(3.0, 1.0)), "sigma_range"),
        (lambda x: blur_jpeg(np.random.default_rng(0), x, quality_range=(90, 40)), "quality_range"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(_smooth(2, size=8))
