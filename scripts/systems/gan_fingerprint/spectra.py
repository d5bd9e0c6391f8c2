"""Mean Fourier spectra of fingerprints (residuals x - AE(x)) and the up-sampling peaks in them.

A stride-2 up-sampler that filters each output phase differently leaves a pattern of period 2 in
the image; its average amplitude spectrum then peaks at frequency N/2 (and N/4 for the stage
before), the artifact Durall et al. (CVPR 2020, arXiv 2003.01826) and Frank et al. (ICML 2020,
arXiv 2003.08685) use to spot GAN images, and the one fingerprint-domain augmentation (Wang et al.,
arXiv 2212.13466, whose figures show such spectra) perturbs.
"""

from __future__ import annotations

import numpy as np


def mean_spectrum(residuals: np.ndarray, *, subtract_mean: bool = True, eps: float = 1e-8) -> np.ndarray:
    """log(mean |FFT2|) over images and channels, fftshifted: shape (H, W), zero frequency at (H//2, W//2).

    `residuals` is (N, H, W, C) or (N, H, W). With `subtract_mean` each image's per-channel mean is
    removed first, so the zero-frequency bin does not dwarf the rest of a plot.
    """
    x = np.asarray(residuals, np.float64)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"residuals must be a non-empty (N, H, W, C) or (N, H, W) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("residuals contain NaN or infinite values")
    if subtract_mean:
        x = x - x.mean(axis=(1, 2), keepdims=True)
    magnitude = np.abs(np.fft.fft2(x, axes=(1, 2))).mean(axis=(0, 3))
    return np.fft.fftshift(np.log(magnitude + eps))


def peak_positions(shape: tuple[int, int], period: int) -> list[tuple[int, int]]:
    """Indices, in an fftshifted (H, W) spectrum, of the non-zero frequencies that are multiples of
    (H/period, W/period): where a pattern of period `period` puts its energy (for period 2: (N/2, 0),
    (0, N/2), (N/2, N/2))."""
    h, w = shape
    if period < 2 or h % period or w % period:
        raise ValueError(f"period={period} must be >= 2 and divide the spectrum's shape {shape}")
    out = []
    for a in range(period):
        for b in range(period):
            if a == b == 0:
                continue
            fy, fx = a * h // period, b * w // period
            out.append(((fy + h // 2) % h, (fx + w // 2) % w))
    return out


def peak_contrast(spectrum: np.ndarray, period: int) -> float:
    """How far the spectrum stands above its surroundings at the period-`period` frequencies: the mean
    over `peak_positions` of (log magnitude there - mean log magnitude of its 8 neighbours, wrapping
    around). About 0 for a smooth spectrum; log(k) when the peaks are k times their neighbourhood."""
    s = np.asarray(spectrum, np.float64)
    if s.ndim != 2:
        raise ValueError(f"spectrum must be a 2-D (H, W) array, got shape {s.shape}")
    h, w = s.shape
    gaps = []
    for y, x in peak_positions((h, w), period):
        ring = [s[(y + dy) % h, (x + dx) % w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        gaps.append(s[y, x] - np.mean(ring))
    return float(np.mean(gaps))
