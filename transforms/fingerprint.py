"""Augmentation in the fingerprint domain: perturb what a generator leaves in an image, keep the content.

Wang, Fei, Dai, Leng and Xia, "General GAN-generated image detection by data augmentation in
fingerprint domain" (arXiv 2212.13466, ICME 2023) split an image x with a frozen autoencoder into
content AE(x) and fingerprint F = x - AE(x). Perturbing F of the *fake* training images and adding it
back, x' = clip(AE(x) + F', 0, 1), gives images that look the same but carry a fingerprint no
training generator printed, which imitates unseen generators and makes a detector trained on one
GAN generalize to others.

The modes and their ranges follow the authors' training code (unnamed repository; see
`shared/papers/resgrad-ganfp-ctt-lead.md` section 2; functions `Perturb_fingerprints_noise`, `_mut`
and `_mix`). Defaults are the reference's ranges; the reference draws on a grid of 1/100 of each range
with Python's `random.randint`, we draw the same ranges continuously.

- "none": F' = F (the reference's "baseline"); the image is returned unchanged.
- "noise": F' = (F + s * N(0, 1)) * m, noise first, then the scale (the reference's order), with
  s ~ U[1e-4, 1e-2] (`randint(1, 100) / 10000`) and m ~ U[-2, 2] (`randint(-100, 100) / 50`).
- "mut": F' = F * m with m ~ U[-k, k], k = 5 (the runs "Mut5"; `randint(-100, 100) / 20`).
- "mix": F' = w * F + (1 - w) * F_o, F_o the fingerprint of a random *other* image, with the own
  weight w ~ U[p, 1], p = 0.5 (the runs "Mix2_50"). The default is this convex mix, which keeps the
  fingerprint's scale. `mix_weight="reference"` reproduces the reference, whose rate bookkeeping
  leaves the other fingerprint a weight of 1 (F' = w * F + F_o). `mix_from="fakes"` (default) draws
  the partner among the other fakes of the batch, so a real image's residual is never mixed into a
  fake; `mix_from="batch"` draws from the whole batch as the reference does. Ours: the partner is
  never the image itself, unless it is the only candidate (a batch with a single fake); the
  reference's `randint(0, len - 1)` picks the image itself 1/batch of the time.

Only fakes (label 1) are perturbed, each with probability `prob` (the reference's `perturb_prob`,
50% in the run names; its `randint(0, 100) < 50` is 50/101 in fact). Every other row is returned
exactly equal to the input (the reference's mix path returns clip(AE(x) + F), which rounding can move
off x). Ours: `mode` may be a sequence of modes, one drawn uniformly per image; the reference uses one
mode per run.

Everything is a pure function of a JAX key and works under `jax.jit`, `jax.vmap` and `jax.grad`
(gradients flow through `reconstruct` too; wrap it in `jax.lax.stop_gradient` for a frozen AE). The
draws are exposed (`draw_perturbations`), so a caller or a test can see exactly what was applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from frugal.transforms import prng

__all__ = [
    "MIX_FROM",
    "MIX_WEIGHTS",
    "MODES",
    "PerturbConfig",
    "PerturbDraws",
    "apply_perturbations",
    "draw_perturbations",
    "fingerprint",
    "perturb_fingerprints",
    "perturbed_fingerprints",
]

MODES = ("none", "noise", "mut", "mix")
MIX_WEIGHTS = ("convex", "reference")
MIX_FROM = ("fakes", "batch")
FAKE = 1  # label of generated images (CNNDetection's `1_fake`)


def _check_images(images, name: str = "images") -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (batch, height, width, channels) NHWC array, got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{name} must be float images in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {images.shape})")
    return images


def _check_labels(labels, batch: int) -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), one 0/1 label per image, got shape {labels.shape}")
    return labels


def fingerprint(images: jax.Array, reconstruct: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Splits images into (content, fingerprint) = (reconstruct(x), x - reconstruct(x)).

    `reconstruct` maps an NHWC batch to one of the same shape, e.g. a frozen autoencoder's forward pass
    (the reference's `ae32`). content + fingerprint equals x up to float rounding.
    """
    images = _check_images(images)
    content = jnp.asarray(reconstruct(images))
    if content.shape != images.shape:
        raise ValueError(f"reconstruct must return the shape of its input {images.shape}, got {content.shape}")
    content = content.astype(images.dtype)
    return content, images - content


@dataclasses.dataclass(frozen=True)
class PerturbConfig:
    """How fingerprints are perturbed (defaults: the reference's ranges; see the module docstring).

    mode: one of MODES, or a sequence of them drawn uniformly per image (ours).
    prob: probability that a fake is perturbed. mut_range: k of "mut", m ~ U[-k, k].
    noise_std_range: (low, high) of s in "noise". noise_scale_range: c of "noise", m ~ U[-c, c].
    mix_min_weight: p of "mix", own weight w ~ U[p, 1]. mix_weight: "convex" or "reference".
    mix_from: "fakes" or "batch", where the mixing partner comes from.
    """

    mode: str | tuple[str, ...] = "mut"
    prob: float = 0.5
    mut_range: float = 5.0
    noise_std_range: tuple[float, float] = (1e-4, 1e-2)
    noise_scale_range: float = 2.0
    mix_min_weight: float = 0.5
    mix_weight: str = "convex"
    mix_from: str = "fakes"

    def __post_init__(self):
        modes = (self.mode,) if isinstance(self.mode, str) else tuple(self.mode)
        if not modes:
            raise ValueError(f"mode must be one of {MODES} or a non-empty sequence of them, got an empty sequence")
        for m in modes:
            if m not in MODES:
                raise ValueError(f"mode {m!r} is unknown; allowed modes are {MODES}")
        object.__setattr__(self, "mode", modes[0] if isinstance(self.mode, str) else modes)
        if not 0.0 <= float(self.prob) <= 1.0:
            raise ValueError(f"prob={self.prob} must lie in [0, 1]")
        if not float(self.mut_range) > 0:
            raise ValueError(f"mut_range (k of 'mut', m ~ U[-k, k]) must be > 0, got {self.mut_range}")
        if not float(self.noise_scale_range) > 0:
            raise ValueError(f"noise_scale_range (m ~ U[-c, c] of 'noise') must be > 0, got {self.noise_scale_range}")
        low, high = (float(v) for v in self.noise_std_range)
        if not 0.0 <= low <= high:
            raise ValueError(f"noise_std_range must be (low, high) with 0 <= low <= high, got {self.noise_std_range}")
        object.__setattr__(self, "noise_std_range", (low, high))
        if not 0.0 <= float(self.mix_min_weight) <= 1.0:
            raise ValueError(f"mix_min_weight (own weight w ~ U[p, 1]) must lie in [0, 1], got {self.mix_min_weight}")
        if self.mix_weight not in MIX_WEIGHTS:
            raise ValueError(f"mix_weight {self.mix_weight!r} is unknown; allowed: {MIX_WEIGHTS}")
        if self.mix_from not in MIX_FROM:
            raise ValueError(f"mix_from {self.mix_from!r} is unknown; allowed: {MIX_FROM}")

    @property
    def modes(self) -> tuple[str, ...]:
        return (self.mode,) if isinstance(self.mode, str) else self.mode


class PerturbDraws(NamedTuple):
    """The random draws of one call, one row per image.

    apply: the row is perturbed (a fake, won its `prob` draw, and its mode is not "none").
    mode_index: index into `config.modes`. noise_std: s of "noise". noise: N(0, 1) of the batch's shape
    (zeros of shape (n, 1, 1, 1) when "noise" is not among the modes). noise_scale: m of "noise".
    mut_scale: m of "mut". own_weight: w of "mix". partner: the row mixed in (the row itself when "mix"
    is not among the modes).
    """

    apply: jax.Array
    mode_index: jax.Array
    noise_std: jax.Array
    noise: jax.Array
    noise_scale: jax.Array
    mut_scale: jax.Array
    own_weight: jax.Array
    partner: jax.Array


def draw_perturbations(key: jax.Array, labels: jax.Array, shape: Sequence[int], config: PerturbConfig) -> PerturbDraws:
    """Draws everything `apply_perturbations` needs for a batch of `shape` (NHWC) with these labels.

    Three random calls (few random programs keep jit compilation short): `jax.random.split(key, 3)` =
    (row, partner, noise) keys. The row key gives u ~ U[0, 1) of shape (n, 6), whose columns are, in
    order, the `prob` test, the mode (floor(u * len(modes))), s, the noise scale, the mut scale and the
    own weight, each mapped affinely onto its range. The partner is the argmax of (n, n) uniform scores
    over the candidates (uniform among them).
    """
    if len(shape) != 4:
        raise ValueError(f"shape must be a 4-D NHWC batch shape, got {tuple(shape)}")
    n = shape[0]
    labels = _check_labels(labels, n)
    dtype = jnp.float32
    row_key, partner_key, noise_key = jax.random.split(key, 3)
    u = prng.uniform(row_key, (n, 6), dtype)
    between = lambda column, low, high: low + (high - low) * u[:, column]
    modes = config.modes
    mode_index = jnp.minimum(jnp.floor(u[:, 1] * len(modes)).astype(jnp.int32), len(modes) - 1)
    not_none = jnp.asarray([m != "none" for m in modes])[mode_index]
    apply = (labels == FAKE) & (u[:, 0] < config.prob) & not_none
    if "noise" in modes:
        noise = prng.normal(noise_key, tuple(shape), dtype)
    else:  # nothing reads it; a broadcastable zero keeps the tuple's shape contract cheap
        noise = jnp.zeros((n, 1, 1, 1), dtype)
    partner = jnp.arange(n, dtype=jnp.int32)
    if "mix" in modes:  # uniform over candidates other than the row itself; the row itself if none
        eligible = labels == FAKE if config.mix_from == "fakes" else jnp.ones((n,), bool)
        candidates = eligible[None, :] & ~jnp.eye(n, dtype=bool)
        scores = jnp.where(candidates, prng.uniform(partner_key, (n, n), dtype), -1.0)
        partner = jnp.where(candidates.any(axis=-1), jnp.argmax(scores, axis=-1).astype(jnp.int32), partner)
    return PerturbDraws(
        apply=apply,
        mode_index=mode_index,
        noise_std=between(2, *config.noise_std_range),
        noise=noise,
        noise_scale=between(3, -config.noise_scale_range, config.noise_scale_range),
        mut_scale=between(4, -config.mut_range, config.mut_range),
        own_weight=between(5, config.mix_min_weight, 1.0),
        partner=partner,
    )


def _rows(values: jax.Array, like: jax.Array) -> jax.Array:
    return values.reshape((-1,) + (1,) * (like.ndim - 1)).astype(like.dtype)


def perturbed_fingerprints(fingerprints: jax.Array, draws: PerturbDraws, config: PerturbConfig) -> jax.Array:
    """F' of every row by its drawn mode (rows with `apply` False are computed too; callers mask them)."""
    fp = _check_images(fingerprints, "fingerprints")
    options = []
    for mode in config.modes:
        if mode == "none":
            out = fp
        elif mode == "noise":
            out = (fp + _rows(draws.noise_std, fp) * draws.noise.astype(fp.dtype)) * _rows(draws.noise_scale, fp)
        elif mode == "mut":
            out = fp * _rows(draws.mut_scale, fp)
        else:  # mix
            w = _rows(draws.own_weight, fp)
            other_weight = 1.0 - w if config.mix_weight == "convex" else jnp.ones_like(w)
            out = w * fp + other_weight * fp[draws.partner]
        options.append(out)
    result = options[0]
    for i in range(1, len(options)):
        result = jnp.where(_rows(draws.mode_index == i, fp).astype(bool), options[i], result)
    return result


def apply_perturbations(
    images: jax.Array, content: jax.Array, fingerprints: jax.Array, draws: PerturbDraws, config: PerturbConfig
) -> jax.Array:
    """clip(content + F', 0, 1) on the rows `draws.apply` selects; every other row is `images` exactly."""
    images = _check_images(images)
    if content.shape != images.shape or fingerprints.shape != images.shape:
        raise ValueError(
            f"images {images.shape}, content {content.shape} and fingerprints {fingerprints.shape} must have one shape"
        )
    perturbed = jnp.clip(content + perturbed_fingerprints(fingerprints, draws, config), 0.0, 1.0)
    return jnp.where(_rows(draws.apply, images).astype(bool), perturbed.astype(images.dtype), images)


def perturb_fingerprints(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    reconstruct: Callable[[jax.Array], jax.Array],
    *,
    mode: str | Sequence[str] | None = None,
    prob: float | None = None,
    config: PerturbConfig | None = None,
    **options,
) -> jax.Array:
    """The paper's augmentation on a batch: fakes (label 1), each with probability `prob`, get
    clip(AE(x) + F', 0, 1); every other row is returned unchanged.

    Give `mode` (and `prob`, default 0.5, plus any other `PerturbConfig` field as a keyword), or a whole
    `config`. The draws are `draw_perturbations(key, labels, images.shape, config)`.
    """
    if config is None:
        if mode is None:
            raise ValueError(f"mode is required: one of {MODES} or a sequence of them (or pass config=)")
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(PerturbConfig)})
        if unknown:
            raise ValueError(f"unknown options {unknown}; allowed: the fields of PerturbConfig")
        prob = 0.5 if prob is None else prob
        config = PerturbConfig(mode=mode if isinstance(mode, str) else tuple(mode), prob=prob, **options)
    elif mode is not None or prob is not None or options:
        raise ValueError("pass either config= or mode=/prob=/options, not both")
    images = _check_images(images)
    labels = _check_labels(labels, images.shape[0])
    content, fp = fingerprint(images, reconstruct)
    draws = draw_perturbations(key, labels, images.shape, config)
    return apply_perturbations(images, content, fp, draws, config)
