"""A zoo of small image generators that differ in what leaves a fingerprint, and the fingerprint autoencoder.

GAN images carry traces of the generator's up-sampling layers: transposed convolutions and other
learned stride-2 up-samplers produce a period-2 (and period-4 from the stage before) pattern whose
spectrum peaks at N/2 and N/4 (Odena et al. 2016, "Deconvolution and checkerboard artifacts",
distill.pub/2016/deconv-checkerboard; Durall et al. CVPR 2020, arXiv 2003.01826; Frank et al. ICML
2020, arXiv 2003.08685). GAN-fingerprint augmentation (Wang et al., arXiv 2212.13466) trains a
detector on one generator and tests it on others, so the zoo needs generators whose fingerprints
differ. They differ here in the up-sampler, the single thing the papers above name as the source:

- "tconv": ConvTranspose, kernel 4, stride 2 (DCGAN, arXiv 1511.06434): zero insertion followed by a
  learned filter, which need not suppress the spectral replica at Nyquist, so the output carries a
  period-2 pattern (the checkerboard);
- "nearest": nearest-neighbour x2 then a 3x3 convolution: the box interpolator has a zero at Nyquist
  and the convolution after it is shift-invariant, so no period-2 pattern is created;
- "bilinear": bilinear x2 (half-pixel centres, the taps 1/4 3/4 3/4 1/4) then a 3x3 convolution:
  also zero at Nyquist, and a smoother low-pass than nearest;
- "shuffle": a 3x3 convolution to 4C channels, then pixel shuffle (depth-to-space, Shi et al. 2016,
  arXiv 1609.05158): four independent filters, one per output phase, hence periodic like tconv. The
  ICNR initialization that hides this at the start (Aitken et al. 2017, arXiv 1707.02937) is
  deliberately not used.

Pieces (images are float32 NHWC in [0, 1]):
- `Generator`: DCGAN-style, latent -> 4x4 -> stride-2 up-sampling stages -> image; the last stage
  up-samples straight to RGB so its fingerprint is not filtered by later layers. The output is
  sigmoid(logit), which equals DCGAN's (tanh(y) + 1) / 2 with y = logit / 2.
- `Discriminator`: DCGAN's stride-2 4x4 conv stack with leaky ReLU and a final 4x4 "valid" conv to
  one logit, optionally spectrally normalized (`SpectralConv`).
- `Resynthesizer`: an encoder to an 8x8 (for 32 px) bottleneck and a decoder with a chosen
  up-sampler, trained with MSE on real patches: content-matched fakes (the CycleGAN/StarGAN role),
  so a detector can only separate them by the up-sampler's fingerprint.
- `FingerprintAE`: the fingerprint extractor's autoencoder, F = x - AE(x).
- `FAMILIES` / `make_family`: the named generator families an experiment trains.
- `init_model`: builds any of these inside one jit (see there why).
"""

from __future__ import annotations

import functools
import math
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.models.layers import NORMS, make_norm
from frugal.transforms.initializers import Conv, ConvTranspose, Linear, lecun_normal

UPSAMPLERS = ("tconv", "nearest", "bilinear", "shuffle")
LEAKY_SLOPE = 0.2  # DCGAN's discriminator activation


def _num_stages(image_size: int) -> int:
    """Stride-2 stages between 4x4 and image_size x image_size."""
    if not isinstance(image_size, int) or image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size={image_size!r} must be a power of two >= 8 (32 and 64 are the usual sizes)")
    return int(math.log2(image_size)) - 2


def _check_width(width: int, name: str = "width") -> None:
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"{name}={width!r} must be a positive integer")


def _check_norm(norm) -> None:
    if not callable(norm) and norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not known; use a factory or one of {list(NORMS)}")


def _check_images(x: jax.Array, who: str, multiple: int = 1) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{who} expects RGB images (batch, height, width, 3), got shape {x.shape}")
    if x.shape[1] % multiple or x.shape[2] % multiple:
        raise ValueError(f"{who} needs height and width divisible by {multiple}, got {x.shape[1]}x{x.shape[2]}")


def pixel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
    """Depth-to-space: (N, H, W, C*f*f) -> (N, H*f, W*f, C); channel (i*f + j)*C + c goes to phase (i, j)."""
    n, h, w, c = x.shape
    if c % (factor * factor):
        raise ValueError(f"pixel_shuffle: {c} channels are not divisible by factor^2 = {factor * factor}")
    out = c // (factor * factor)
    x = x.reshape(n, h, w, factor, factor, out)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * factor, w * factor, out)


class Upsample(nnx.Module):
    """One x2 up-sampling stage from `in_ch` to `out_ch` channels with the named up-sampler (see module doc)."""

    def __init__(self, in_ch: int, out_ch: int, mode: str, *, rngs: nnx.Rngs):
        if mode not in UPSAMPLERS:
            raise ValueError(f"upsample={mode!r} is not known; use one of {UPSAMPLERS}")
        self.mode = mode
        if mode == "tconv":
            self.conv = ConvTranspose(in_ch, out_ch, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        else:
            channels = 4 * out_ch if mode == "shuffle" else out_ch
            self.conv = Conv(in_ch, channels, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.mode == "tconv":
            return self.conv(x)
        if self.mode == "shuffle":
            return pixel_shuffle(self.conv(x))
        n, h, w, c = x.shape
        if self.mode == "nearest":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        else:  # bilinear, half-pixel centres (PyTorch align_corners=False)
            x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
        return self.conv(x)


class Generator(nnx.Module):
    """DCGAN-style generator: z (batch, latent_dim) -> images (batch, image_size, image_size, 3) in [0, 1].

    Channels halve per stage from width * 2^(stages-1) at 4x4 down to `width`, and the last stage goes
    to RGB (for 32 px and width 32: 128 -> 64 -> 32 -> 3). `norm` ("batch", "none", "layer", "group")
    follows the projection and every stage but the last, as in DCGAN.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        width: int = 32,
        upsample: str = "tconv",
        norm: str = "batch",
        image_size: int = 32,
        *,
        rngs: nnx.Rngs,
    ):
        _check_width(latent_dim, "latent_dim")
        _check_width(width)
        stages = _num_stages(image_size)
        if upsample not in UPSAMPLERS:
            raise ValueError(f"upsample={upsample!r} is not known; use one of {UPSAMPLERS}")
        _check_norm(norm)
        self.latent_dim, self.image_size = latent_dim, image_size
        channels = [width * 2 ** (stages - 1 - i) for i in range(stages)] + [3]
        self.base_channels = channels[0]
        self.project = Linear(latent_dim, 16 * channels[0], rngs=rngs)
        self.project_norm = make_norm(norm, channels[0], rngs=rngs)
        self.stages = nnx.List([Upsample(channels[i], channels[i + 1], upsample, rngs=rngs) for i in range(stages)])
        self.norms = nnx.List([make_norm(norm, c, rngs=rngs) for c in channels[1:-1]])

    def __call__(self, z: jax.Array) -> jax.Array:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Generator expects latents of shape (batch, {self.latent_dim}), got {z.shape}")
        x = self.project(z).reshape(z.shape[0], 4, 4, self.base_channels)
        x = jax.nn.relu(self.project_norm(x))
        for stage, norm in zip(self.stages, self.norms):
            x = jax.nn.relu(norm(stage(x)))
        return jax.nn.sigmoid(self.stages[-1](x))


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x) + eps)


class SpectralConv(nnx.Module):
    """A convolution whose kernel is divided by its largest singular value (Miyato et al. 2018, arXiv 1802.05957).

    As in the paper and in PyTorch's `spectral_norm`, the kernel is viewed as the matrix
    (kh * kw * in_ch, out_ch), and its top singular value is estimated by power iteration from a
    persistent vector `u` (an `nnx.BatchStat`, so optimizers leave it alone and checkpoints keep it):
    `n_power_iterations` steps per call, `u` updated in training mode (`.train()`) and read only in
    `.eval()` mode. Gradients flow through sigma's dependence on the kernel, not through u and v.

    Not `nnx.SpectralNorm`: in flax 0.12.8 that wrapper writes the normalized kernel back into the
    wrapped layer's parameter on every call (also in eval mode), so repeated calls rescale the stored
    weights; here the stored kernel is never modified.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int,
        padding,
        *,
        n_power_iterations: int = 1,
        rngs: nnx.Rngs,
    ):
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations={n_power_iterations} must be >= 1")
        shape = (kernel_size, kernel_size, in_ch, out_ch)
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_ch,)))
        self.u = nnx.BatchStat(_l2_normalize(jax.random.normal(rngs.params(), (out_ch,))))
        self.stride, self.padding = stride, padding
        self.n_power_iterations = n_power_iterations
        self.use_running_average = False  # flipped by .eval() / .train(), like BatchNorm

    def _sigma(self, update: bool) -> jax.Array:
        w = self.kernel[...].reshape(-1, self.kernel.shape[-1])
        u = self.u[...]
        for _ in range(self.n_power_iterations):
            v = _l2_normalize(w @ u)
            u = _l2_normalize(w.T @ v)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        if update:
            self.u[...] = u
        return v @ w @ u

    def normalized_kernel(self) -> jax.Array:
        """The kernel divided by the current estimate of its top singular value (u is not updated)."""
        return self.kernel[...] / self._sigma(update=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...] / self._sigma(update=not self.use_running_average)
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias[...]


def _d_conv(in_ch, out_ch, kernel, stride, padding, spectral_norm: bool, n_power_iterations: int, rngs):
    if spectral_norm:
        return SpectralConv(in_ch, out_ch, kernel, stride, padding, n_power_iterations=n_power_iterations, rngs=rngs)
    return Conv(in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=padding, rngs=rngs)


class Discriminator(nnx.Module):
    """DCGAN discriminator: images -> one logit per image, shape (batch,).

    Stride-2 4x4 convolutions (padding 1) from `image_size` down to 4x4 with width, 2 width, 4 width,
    ... channels and leaky ReLU (slope 0.2), then a 4x4 "valid" convolution to one logit. `norm`
    ("none" by default; "batch", "layer", "group") follows every convolution but the first, as in
    DCGAN; with `spectral_norm` every convolution, the last one included, is a `SpectralConv`.
    """

    def __init__(
        self,
        width: int = 32,
        spectral_norm: bool = False,
        image_size: int = 32,
        *,
        norm: str = "none",
        n_power_iterations: int = 1,
        rngs: nnx.Rngs,
    ):
        _check_width(width)
        _check_norm(norm)
        stages = _num_stages(image_size)
        self.image_size = image_size
        channels = [3] + [width * 2**i for i in range(stages)]
        sn = bool(spectral_norm)
        self.convs = nnx.List(
            [
                _d_conv(channels[i], channels[i + 1], 4, 2, ((1, 1), (1, 1)), sn, n_power_iterations, rngs)
                for i in range(stages)
            ]
        )
        self.norms = nnx.List([make_norm(norm, c, rngs=rngs) for c in channels[2:]])
        self.head = _d_conv(channels[-1], 1, 4, 1, "VALID", sn, n_power_iterations, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _check_images(x, "Discriminator")
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"Discriminator was built for {self.image_size}x{self.image_size} images, got {x.shape}")
        x = jax.nn.leaky_relu(self.convs[0](x), LEAKY_SLOPE)
        for conv, norm in zip(self.convs[1:], self.norms):
            x = jax.nn.leaky_relu(norm(conv(x)), LEAKY_SLOPE)
        return self.head(x).reshape(x.shape[0])


class _Encoder(nnx.Module):
    """3x3 conv (width), two stride-2 4x4 convs (2 width), a 1x1 conv to `bottleneck` channels: H/4 x W/4 codes."""

    def __init__(self, width: int, bottleneck: int, *, rngs: nnx.Rngs):
        _check_width(width)
        _check_width(bottleneck, "bottleneck")
        self.conv_in = Conv(3, width, (3, 3), padding="SAME", rngs=rngs)
        self.down1 = Conv(width, 2 * width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=rngs)
        self.down2 = Conv(2 * width, 2 * width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=rngs)
        self.code = Conv(2 * width, bottleneck, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv_in(x))
        x = jax.nn.relu(self.down1(x))
        x = jax.nn.relu(self.down2(x))
        return self.code(x)


class Resynthesizer(nnx.Module):
    """Content-matched re-synthesis: image -> code (H/4 x W/4 x bottleneck) -> image in [0, 1].

    The decoder is a 3x3 conv, then two x2 stages with `upsample` (the last straight to RGB, as in
    `Generator`), then a sigmoid. The 8x8x16 code of a 32 px image is a third of the input's size, so
    the decoder has to synthesize the fine detail, and with it its up-sampler's fingerprint.
    """

    def __init__(self, width: int = 32, upsample: str = "tconv", *, bottleneck: int = 16, rngs: nnx.Rngs):
        self.encoder = _Encoder(width, bottleneck, rngs=rngs)
        self.decode_in = Conv(bottleneck, 2 * width, (3, 3), padding="SAME", rngs=rngs)
        self.up1 = Upsample(2 * width, width, upsample, rngs=rngs)
        self.up2 = Upsample(width, 3, upsample, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _check_images(x, "Resynthesizer", multiple=4)
        h = jax.nn.relu(self.decode_in(jax.nn.relu(self.encoder(x))))
        return jax.nn.sigmoid(self.up2(jax.nn.relu(self.up1(h))))


class FingerprintAE(nnx.Module):
    """The fingerprint extractor's autoencoder: content AE(x), fingerprint F = x - AE(x).

    Trained with MSE on real images, it reconstructs what its H/4 code can carry, so it acts as a
    non-linear low-pass filter and F holds the fine residual where up-sampling traces live (the
    GANprintR-style removal/extraction idea; Wang et al. arXiv 2212.13466 use a frozen pre-trained
    AE whose architecture is not published). Design choices:
    - the decoder up-samples bilinearly (then a 3x3 conv): a fixed interpolator with a zero at
      Nyquist and no learned per-phase filters, so the extractor does not add periodic peaks of its
      own to F (a tconv or pixel-shuffle decoder would);
    - the output is linear, not squashed or clipped, so x = AE(x) + F holds exactly and F does not
      absorb clipping error; AE(x) may leave [0, 1] slightly (clamp after re-combining).
    """

    def __init__(self, width: int = 32, *, bottleneck: int = 16, rngs: nnx.Rngs):
        self.encoder = _Encoder(width, bottleneck, rngs=rngs)
        self.decode_in = Conv(bottleneck, 2 * width, (3, 3), padding="SAME", rngs=rngs)
        self.up1 = Upsample(2 * width, width, "bilinear", rngs=rngs)
        self.up2 = Upsample(width, width, "bilinear", rngs=rngs)
        self.conv_out = Conv(width, 3, (3, 3), padding="SAME", rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        _check_images(x, "FingerprintAE", multiple=4)
        return self.encoder(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.decode_in(jax.nn.relu(self.encode(x))))
        h = jax.nn.relu(self.up2(jax.nn.relu(self.up1(h))))
        return self.conv_out(h)

    def fingerprint(self, x: jax.Array) -> jax.Array:
        """F = x - AE(x)."""
        return x - self(x)


class Family(NamedTuple):
    """A generator family: `kind` "gan" (kwargs {"generator": ..., "discriminator": ...}) or "resynth"
    (kwargs {"resynthesizer": ...}), and its training loss (a `frugal.transforms.gan_losses` name or "mse")."""

    kind: str
    kwargs: dict
    loss: str


def _gan(upsample: str, norm: str, loss: str, spectral_norm: bool = False) -> Family:
    return Family(
        "gan",
        {"generator": {"upsample": upsample, "norm": norm}, "discriminator": {"spectral_norm": spectral_norm}},
        loss,
    )


FAMILIES: types.MappingProxyType[str, Family] = types.MappingProxyType(
    {
        # The DCGAN recipe, the detector's training source (ProGAN's role in the paper's protocol).
        "tconv": _gan("tconv", "batch", "nonsaturating"),
        "nearest": _gan("nearest", "batch", "nonsaturating"),
        "bilinear": _gan("bilinear", "batch", "lsgan"),
        "shuffle": _gan("shuffle", "batch", "nonsaturating"),
        # Same up-sampler as the source, different training: no BN in G, spectral norm in D, hinge loss
        # (the SN-GAN recipe, Miyato et al. arXiv 1802.05957).
        "tconv_sn_hinge": _gan("tconv", "none", "hinge", spectral_norm=True),
        # Content-matched re-synthesizers (the CycleGAN / StarGAN role).
        "resynth_tconv": Family("resynth", {"resynthesizer": {"upsample": "tconv"}}, "mse"),
        "resynth_nearest": Family("resynth", {"resynthesizer": {"upsample": "nearest"}}, "mse"),
        "resynth_shuffle": Family("resynth", {"resynthesizer": {"upsample": "shuffle"}}, "mse"),
    }
)


@functools.partial(nnx.jit, static_argnums=(0, 1))
def _init_jitted(cls, kwargs: tuple, key):
    return cls(**dict(kwargs), rngs=nnx.Rngs(key))


def init_model(cls: type, seed: int | jax.Array = 0, **kwargs) -> nnx.Module:
    """`cls(**kwargs, rngs=nnx.Rngs(seed))`, initialized inside one jit.

    Built eagerly, every parameter shape compiles its own initializer, and on CPU each threefry
    compile takes seconds; inside one jit a model compiles once per architecture (and every seed of
    it reuses that). `seed` is an int or a PRNG key (e.g. `jax.random.key(0, impl="rbg")`, which
    compiles much faster than the default threefry; tests use it). `kwargs` must be hashable.
    """
    key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    return _init_jitted(cls, tuple(sorted(kwargs.items())), key)


@functools.partial(nnx.jit, static_argnums=(0, 1, 2, 3))
def _init_family(name: str, width: int, image_size: int, latent_dim: int, key):
    family, rngs = FAMILIES[name], nnx.Rngs(key)
    if family.kind == "resynth":
        return Resynthesizer(width, **family.kwargs["resynthesizer"], rngs=rngs), None
    generator = Generator(latent_dim, width, image_size=image_size, **family.kwargs["generator"], rngs=rngs)
    return generator, Discriminator(width, image_size=image_size, **family.kwargs["discriminator"], rngs=rngs)


def make_family(
    name: str, *, width: int = 32, image_size: int = 32, latent_dim: int = 64, seed: int | jax.Array = 0
) -> tuple[nnx.Module, nnx.Module | None]:
    """Fresh models of family `name`: (Generator, Discriminator) for a GAN, (Resynthesizer, None) otherwise,
    initialized from `seed` (an int or a PRNG key) inside one jit (see `init_model`)."""
    if name not in FAMILIES:
        raise ValueError(f"family={name!r} is not known; use one of {sorted(FAMILIES)}")
    key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    return _init_family(name, width, image_size, latent_dim, key)
