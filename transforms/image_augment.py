"""Image-domain inputs and augmentations of the fake-image detection baselines, as pure JAX functions.

These are what fingerprint-domain augmentation (arXiv 2212.13466, `frugal.transforms.fingerprint`) is
compared with:

- `npr_residual`: NPR, neighbouring pixel relationships (Tan et al., CVPR 2024, arXiv 2312.10461,
  github.com/chuangchuangtan/NPR-DeepfakeDetection `networks/resnet.py`). The detector's input is
  x - up(down(x)), nearest neighbour both ways, which is zero wherever an image is locally constant
  over factor x factor blocks and so exposes the pixel correlations up-sampling layers leave.
- `gaussian_blur`: the blur half of CNNDetection's Blur+JPEG (Wang et al., CVPR 2020, arXiv 1912.11035,
  github.com/PeterWang512/CNNDetection `data/datasets.py`): sigma ~ U[0, 3], scipy's
  `gaussian_filter` (reflect mode, truncate 4). The JPEG half needs a real codec and lives on the host
  (`frugal.scripts.systems.gan_fingerprint.jpeg`).
- `image_noise`: Gaussian noise in the image domain, the control for fingerprint-domain noise; the
  defaults are the authors' `Perturb_images_noise` (sigma ~ U[1e-4, 1e-2], fakes only, clipped).
- `frequency_augment`: ours, a member of the frequency-domain augmentation family the paper compares
  against (BiHPF, Jeong et al. WACV 2022; FrePGAN, Jeong et al. AAAI 2022): the amplitude of one random
  high-frequency annulus of each channel's 2-D spectrum is scaled by a random gain (gain 0 masks it).

Images are float NHWC in [0, 1]. Each augmentation acts per image with probability `prob`, on every
image, or only on fakes (label 1) when `labels` is given; rows left alone are returned exactly. Each
takes a JAX key and works under `jax.jit`, `jax.vmap` and `jax.grad`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from frugal.transforms import prng

__all__ = ["frequency_augment", "gaussian_blur", "gaussian_kernel_radius", "image_noise", "npr_residual"]

NPR_SCALE = 2.0 / 3.0  # the reference feeds conv1 with NPR * 2.0 / 3.0


def _check_images(images) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-D (batch, height, width, channels) NHWC array, got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be float images in [0, 1], got dtype {images.dtype}")
    return images


def _check_prob(prob) -> None:
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"prob={prob} must lie in [0, 1]")


def _check_labels(labels, n: int) -> None:
    if labels is not None and jnp.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},), one 0/1 label per image, got shape {jnp.shape(labels)}")


def _apply_mask(key, images: jax.Array, labels, prob) -> jax.Array:
    """(n, 1, 1, 1) bool: which rows to augment (eligible rows, each with probability prob)."""
    chosen = jax.random.uniform(key, (images.shape[0],)) < prob
    if labels is not None:
        chosen = chosen & (jnp.asarray(labels) == 1)
    return chosen[:, None, None, None]


def npr_residual(images: jax.Array, factor: int = 2, scale: float = NPR_SCALE) -> jax.Array:
    """NPR: scale * (x - nearest_up(nearest_down(x, 1/factor), factor)).

    The reference's nearest down-sampling (PyTorch `F.interpolate(mode="nearest")`, source index
    floor(i * factor)) keeps the top-left pixel of every factor x factor block, so
    x_re[i, j] = x[factor * (i // factor), factor * (j // factor)]. Height and width must be multiples of
    factor (the reference fails otherwise: the re-up-sampled image has another size). `scale` is the
    reference's 2/3 applied before its first convolution; pass 1.0 for the plain residual.
    """
    images = _check_images(images)
    if not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an int >= 2, got {factor!r}")
    h, w = images.shape[1:3]
    if h % factor or w % factor:
        raise ValueError(f"images height and width must be multiples of factor={factor}, got {h}x{w}")
    coarse = images[:, ::factor, ::factor, :]
    rebuilt = jnp.repeat(jnp.repeat(coarse, factor, axis=1), factor, axis=2)
    return (images - rebuilt) * scale


def image_noise(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array | None = None,
    *,
    sigma_min: float = 1e-4,
    sigma_max: float = 1e-2,
    prob: float = 0.5,
) -> jax.Array:
    """clip(x + sigma * N(0, 1), 0, 1) with sigma ~ U[sigma_min, sigma_max] per image.

    Sub-keys: `jax.random.split(key, 3)` = (which rows, sigma, noise). Defaults are the authors'
    image-domain control `Perturb_images_noise` (arXiv 2212.13466 code, `randint(1, 100) / 10000`).
    """
    images = _check_images(images)
    _check_prob(prob)
    if not 0.0 <= sigma_min <= sigma_max:
        raise ValueError(f"need 0 <= sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    _check_labels(labels, images.shape[0])
    k_apply, k_sigma, k_noise = jax.random.split(key, 3)
    apply = _apply_mask(k_apply, images, labels, prob)
    n = images.shape[0]
    sigma = prng.uniform(k_sigma, (n, 1, 1, 1), images.dtype, sigma_min, sigma_max)
    noisy = jnp.clip(images + sigma * prng.normal(k_noise, images.shape, images.dtype), 0.0, 1.0)
    return jnp.where(apply, noisy, images)


def gaussian_kernel_radius(sigma: float, truncate: float = 4.0) -> int:
    """scipy.ndimage.gaussian_filter's kernel radius: int(truncate * sigma + 0.5)."""
    return int(truncate * float(sigma) + 0.5)


def _reflect_index(n: int, radius: int) -> jax.Array:
    """(n, 2 radius + 1) source indices of each output's taps along a length-n axis, padded in scipy's
    "reflect" mode (d c b a | a b c d | d c b a, repeated for pads longer than the axis)."""
    i = (jnp.arange(n)[:, None] + jnp.arange(-radius, radius + 1)[None, :]) % (2 * n)
    return jnp.where(i < n, i, 2 * n - 1 - i)


def _blur_axis(images: jax.Array, kernels: jax.Array, axis: int) -> jax.Array:
    """Per-image 1-D correlation along `axis` (1 = height, 2 = width) with kernels (n, 2r + 1)."""
    radius = (kernels.shape[1] - 1) // 2
    windows = jnp.take(images, _reflect_index(images.shape[axis], radius), axis=axis)
    if axis == 1:  # (n, h, taps, w, c)
        return jnp.einsum("nhtwc,nt->nhwc", windows, kernels)
    return jnp.einsum("nhwtc,nt->nhwc", windows, kernels)  # (n, h, w, taps, c)


def gaussian_blur(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array | None = None,
    *,
    sigma_max: float = 3.0,
    prob: float = 0.5,
    truncate: float = 4.0,
    sigma: jax.Array | None = None,
) -> jax.Array:
    """Separable Gaussian blur of each chosen image with its own sigma ~ U[0, sigma_max].

    Matches scipy.ndimage.gaussian_filter(x, (s, s, 0), mode="reflect", truncate=truncate) per image
    (CNNDetection blurs each channel with scipy's defaults): the kernel for sigma s is
    exp(-t^2 / 2s^2) normalized over |t| <= int(truncate * s + 0.5), so a tiny sigma is the identity.
    All kernels share the radius of sigma_max so the shapes are static under jit. `sigma` (n,) fixes
    the per-image sigmas instead of drawing them (each must be in [0, sigma_max]). Sub-keys:
    `jax.random.split(key, 2)` = (which rows, sigma).
    """
    images = _check_images(images)
    _check_prob(prob)
    if not sigma_max >= 0:
        raise ValueError(f"sigma_max must be >= 0, got {sigma_max}")
    if not truncate > 0:
        raise ValueError(f"truncate must be > 0, got {truncate}")
    n = images.shape[0]
    _check_labels(labels, n)
    if sigma is not None and jnp.shape(sigma) != (n,):
        raise ValueError(f"sigma must have shape ({n},), one sigma per image, got shape {jnp.shape(sigma)}")
    radius = gaussian_kernel_radius(sigma_max, truncate)
    if radius == 0:
        return images
    k_apply, k_sigma = jax.random.split(key)
    apply = _apply_mask(k_apply, images, labels, prob)
    if sigma is None:
        sigma = jax.random.uniform(k_sigma, (n,), jnp.float32, 0.0, sigma_max)
    sigma = jnp.asarray(sigma, jnp.float32)
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    own_radius = jnp.floor(truncate * sigma + 0.5)
    safe = jnp.maximum(sigma, 1e-6)[:, None]
    weights = jnp.where(jnp.abs(t)[None, :] <= own_radius[:, None], jnp.exp(-0.5 * (t[None, :] / safe) ** 2), 0.0)
    kernels = (weights / weights.sum(axis=1, keepdims=True)).astype(images.dtype)
    blurred = _blur_axis(_blur_axis(images, kernels, 1), kernels, 2)
    return jnp.where(apply, blurred, images)


def frequency_augment(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array | None = None,
    *,
    prob: float = 0.5,
    min_radius: float = 0.25,
    max_width: float = 0.5,
    gain_range: tuple[float, float] = (0.0, 2.0),
    clip: bool = True,
) -> jax.Array:
    """Scales the spectrum amplitude of a random high-frequency annulus, per image (ours).

    Radius is |f| / 0.5 with f the (cycles per pixel) frequency of `jnp.fft.fft2` over height and
    width, so 1 is the Nyquist frequency along an axis and the corners reach sqrt(2). Per chosen image:
    inner edge r0 ~ U[min_radius, 1], width ~ U[0, max_width], gain g ~ U[gain_range]; every
    coefficient with r0 <= radius < r0 + width, in every channel, is multiplied by g (phase kept;
    g = 0 masks the band). The band is symmetric in f, so the result is real, and min_radius > 0 keeps
    the DC term, hence each channel's mean (exactly before `clip` to [0, 1]). Sub-keys:
    `jax.random.split(key, 4)` = (which rows, r0, width, gain).
    """
    images = _check_images(images)
    _check_prob(prob)
    if not 0.0 < min_radius <= 1.0:
        raise ValueError(f"min_radius must lie in (0, 1] (a fraction of Nyquist; 0 is the DC term), got {min_radius}")
    if not max_width >= 0:
        raise ValueError(f"max_width must be >= 0, got {max_width}")
    low, high = gain_range
    if not 0.0 <= low <= high:
        raise ValueError(f"gain_range must be (low, high) with 0 <= low <= high, got {gain_range}")
    _check_labels(labels, images.shape[0])
    n, h, w, _ = images.shape
    k_apply, k_r0, k_width, k_gain = jax.random.split(key, 4)
    apply = _apply_mask(k_apply, images, labels, prob)
    r0 = prng.uniform(k_r0, (n, 1, 1, 1), jnp.float32, min_radius, 1.0)
    width = prng.uniform(k_width, (n, 1, 1, 1), jnp.float32, 0.0, max_width)
    gain = prng.uniform(k_gain, (n, 1, 1, 1), jnp.float32, low, high)
    fy, fx = jnp.fft.fftfreq(h), jnp.fft.fftfreq(w)
    radius = jnp.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)[None, :, :, None] / 0.5
    in_band = (radius >= r0) & (radius < r0 + width)
    spectrum = jnp.fft.fft2(images.astype(jnp.float32), axes=(1, 2))
    out = jnp.real(jnp.fft.ifft2(spectrum * jnp.where(in_band, gain, 1.0), axes=(1, 2))).astype(images.dtype)
    if clip:
        out = jnp.clip(out, 0.0, 1.0)
    return jnp.where(apply, out, images)
