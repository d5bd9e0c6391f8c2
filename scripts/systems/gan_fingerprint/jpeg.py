"""CNNDetection's Blur+JPEG augmentation on the host: a real JPEG codec (Pillow) over NumPy batches.

Wang et al., "CNN-generated images are surprisingly easy to spot... for now" (CVPR 2020, arXiv
1912.11035, github.com/PeterWang512/CNNDetection) train with `data_augment` (`data/datasets.py`): per
image, with probability `blur_prob` a Gaussian blur (sigma ~ U[0, 3], scipy `gaussian_filter` per
channel, reflect mode), *then*, independently with probability `jpg_prob`, JPEG re-compression at a
quality drawn uniformly from the integers 30..100 (`--jpg_qual 30,100` becomes `range(30, 101)`).
The published models use 0.5 for both ("Blur+JPEG (0.5)") or 0.1. It acts on every training image,
real and fake.

Differences from the reference: it blurs the uint8 image in place (rounding the blur to integers) and
draws the codec from {OpenCV, Pillow}; here the blur is on floats and the codec is always Pillow's
(both wrap the IJG libjpeg quantization tables with 4:2:0 chroma subsampling by default). JPEG needs
bytes, so a JPEG'd image is quantized to 8 bits; images that draw no JPEG are returned unquantized.

Images are float NHWC in [0, 1] with 1 (grey) or 3 (RGB) channels; the output is float32 of the same
shape. Randomness comes only from the numpy `Generator` passed in, so a seed reproduces a batch.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["QUALITY_RANGE", "SIGMA_RANGE", "blur_jpeg", "gaussian_blur", "jpeg_compress", "random_jpeg"]

QUALITY_RANGE = (30, 100)  # CNNDetection `--jpg_qual 30,100`, both ends included
SIGMA_RANGE = (0.0, 3.0)  # CNNDetection `--blur_sig 0.0,3.0`


def _check_batch(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be a 4-D NHWC batch with 1 or 3 channels, got shape {images.shape}")
    if images.dtype.kind != "f":
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype} (divide uint8 by 255)")
    if images.size and not np.all(np.isfinite(images)):
        raise ValueError("images contains NaN or infinite values")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(f"images must lie in [0, 1], got values in [{images.min():.4g}, {images.max():.4g}]")
    return images


def _check_prob(name: str, prob: float) -> None:
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name}={prob} must lie in [0, 1]")


def _check_quality(quality: int) -> int:
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in [1, 100], got {quality!r}")
    return int(quality)


def _jpeg_one(image: np.ndarray, quality: int) -> np.ndarray:
    """One HWC float image through Pillow's JPEG encoder and decoder (CNNDetection's `pil_jpg`)."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    grey = pixels.shape[-1] == 1
    buffer = io.BytesIO()
    # A 2-D uint8 array becomes an "L" image, an HxWx3 one "RGB".
    Image.fromarray(pixels[..., 0] if grey else pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded, dtype=np.float32) / 255.0
    return out[..., None] if grey else out


def jpeg_compress(images, quality) -> np.ndarray:
    """Every image JPEG-encoded and decoded at `quality` (an int in [1, 100], or one per image)."""
    images = _check_batch(images)
    qualities = np.broadcast_to(np.asarray(quality), (images.shape[0],))
    out = np.empty(images.shape, np.float32)
    for i, q in enumerate(qualities):
        out[i] = _jpeg_one(images[i], _check_quality(q.item()))
    return out


def random_jpeg(
    rng: np.random.Generator, images, prob: float = 0.5, quality_range: tuple[int, int] = QUALITY_RANGE
) -> np.ndarray:
    """Each image, with probability `prob`, JPEG'd at a quality ~ U{low..high}; the rest returned as given."""
    return blur_jpeg(rng, images, blur_prob=0.0, jpeg_prob=prob, quality_range=quality_range)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """One HWC image blurred spatially, channel by channel, as CNNDetection does (scipy, reflect mode)."""
    return ndimage.gaussian_filter(np.asarray(image, np.float64), sigma=(sigma, sigma, 0.0), mode="reflect")


def blur_jpeg(
    rng: np.random.Generator,
    images,
    prob: float = 0.5,
    *,
    blur_prob: float | None = None,
    jpeg_prob: float | None = None,
    sigma_range: tuple[float, float] = SIGMA_RANGE,
    quality_range: tuple[int, int] = QUALITY_RANGE,
) -> np.ndarray:
    """CNNDetection's `data_augment` on a batch: blur (prob `blur_prob`, sigma ~ U[sigma_range]), then
    JPEG (prob `jpeg_prob`, quality ~ U{quality_range}), independently per image.

    `prob` sets both probabilities ("Blur+JPEG (0.5)"); `blur_prob` / `jpeg_prob` override one. Per
    image the draws are, in order: blur?, sigma (if blurred), JPEG?, quality (if JPEG'd), as the
    reference's `random()` calls go. Blurred outputs are clipped to [0, 1] (they stay inside already,
    up to rounding).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng), got {type(rng).__name__}")
    images = _check_batch(images)
    blur_prob = prob if blur_prob is None else blur_prob
    jpeg_prob = prob if jpeg_prob is None else jpeg_prob
    for name, p in (("prob", prob), ("blur_prob", blur_prob), ("jpeg_prob", jpeg_prob)):
        _check_prob(name, p)
    s_low, s_high = sigma_range
    if not 0.0 <= s_low <= s_high:
        raise ValueError(f"sigma_range must be (low, high) with 0 <= low <= high, got {sigma_range}")
    q_low, q_high = quality_range
    _check_quality(q_low), _check_quality(q_high)
    if q_low > q_high:
        raise ValueError(f"quality_range must be (low, high) with low <= high, got {quality_range}")
    out = images.astype(np.float32, copy=True)
    for i in range(images.shape[0]):
        image = images[i]
        if rng.random() < blur_prob:
            sigma = s_low + (s_high - s_low) * rng.random()
            image = np.clip(gaussian_blur(image, sigma), 0.0, 1.0)
        if rng.random() < jpeg_prob:
            image = _jpeg_one(image, int(rng.integers(q_low, q_high + 1)))
        out[i] = image
    return out
