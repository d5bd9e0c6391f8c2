"""The generator zoo: shapes for every family and size, the up-samplers' spectral fingerprints, spectral norm."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models import gan_zoo as gz


def _abstract_apply(build, x_shape):
    """Output shape of build()(x), built and applied abstractly in one trace (nothing is computed)."""
    return jax.eval_shape(lambda x: build()(x), jax.ShapeDtypeStruct(x_shape, jnp.float32)).shape


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", sorted(gz.FAMILIES))
def test_every_family_has_the_right_shapes(name, size):
    def model(i):
        return lambda: gz.make_family(name, width=4, image_size=size, latent_dim=8)[i]

    if gz.FAMILIES[name].kind == "gan":
        g_shape = _abstract_apply(model(0), (2, 8))
        d_shape = _abstract_apply(model(1), (2, size, size, 3))
        assert (g_shape, d_shape) == ((2, size, size, 3), (2,))
    else:
        assert _abstract_apply(model(0), (2, size, size, 3)) == (2, size, size, 3)


def test_family_registry_spans_upsamplers_losses_and_resynthesizers():
    gans = {n: f for n, f in gz.FAMILIES.items() if f.kind == "gan"}
    resynth = {n: f for n, f in gz.FAMILIES.items() if f.kind == "resynth"}
    assert len(gans) >= 5 and len(resynth) >= 2
    assert {f.kwargs["generator"]["upsample"] for f in gans.values()} == set(gz.UPSAMPLERS)
    # Some family shares the source's up-sampler but differs in loss, normalization or spectral norm.
    recipes = {(f.kwargs["generator"]["upsample"], f.kwargs["generator"]["norm"], f.loss) for f in gans.values()}
    assert len(recipes) == len(gans)
    assert any(f.kwargs["discriminator"]["spectral_norm"] for f in gans.values())
    assert len({f.kwargs["resynthesizer"]["upsample"] for f in resynth.values()}) == len(resynth)


# Concrete models are built inside one jit (`init_model`) from "rbg" keys: threefry initializers
# take seconds per parameter shape to compile on CPU, which this suite cannot afford.
def _key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


@nnx.jit
def _apply(model, x):
    return model(x)


def _nyquist_contrast(images: np.ndarray) -> float:
    """log of the mean amplitude at the three Nyquist frequencies over that of the frequencies one bin away."""
    x = images - images.mean(axis=(1, 2), keepdims=True)
    amp = np.abs(np.fft.fft2(x, axes=(1, 2))).mean(axis=(0, 3))
    n = amp.shape[0] // 2
    peaks = [amp[n, 0], amp[0, n], amp[n, n]]
    nearby = [amp[n - 1, 0], amp[n + 1, 0], amp[0, n - 1], amp[0, n + 1], amp[n - 1, n - 1], amp[n + 1, n + 1]]
    return float(np.log(np.mean(peaks) / np.mean(nearby)))


@jax.jit
def _untrained_ae_split(key, x):
    # Built and applied in one jit: one compile instead of one for the initialization and one for the call.
    ae = gz.FingerprintAE(4, bottleneck=5, rngs=nnx.Rngs(key))
    return ae.encode(x), ae.fingerprint(x)


def test_fingerprint_ae_content_has_no_upsampling_peak():
    x = np.random.default_rng(0).random((16, 16, 16, 3), np.float32)
    code, fingerprint = _untrained_ae_split(_key(0), x)
    assert code.shape == (16, 4, 4, 5)
    content = np.asarray(x - fingerprint, np.float64)
    # The bilinear decoder adds no period-2 pattern of its own (contrast about 0, tconv's is about 2).
    assert abs(_nyquist_contrast(content)) < 0.6


def test_pixel_shuffle_matches_a_numpy_loop():
    x = np.arange(2 * 3 * 2 * 8, dtype=np.float32).reshape(2, 3, 2, 8)
    out = np.asarray(gz.pixel_shuffle(jnp.asarray(x)))
    ref = np.zeros((2, 6, 4, 2), np.float32)
    for n in range(2):
        for h in range(3):
            for w in range(2):
                for i in range(2):
                    for j in range(2):
                        ref[n, 2 * h + i, 2 * w + j] = x[n, h, w, (i * 2 + j) * 2 : (i * 2 + j) * 2 + 2]
    np.testing.assert_array_equal(out, ref)


@functools.partial(jax.jit, static_argnames="upsample")
def _untrained_generator_images(key, z, upsample):
    return gz.Generator(16, 4, upsample, "batch", 16, rngs=nnx.Rngs(key))(z)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_tconv_generator_has_a_nyquist_peak_that_bilinear_lacks(seed):
    # A property of the up-sampler, before any training. Measured over seeds 0-7 (16 px, width 4):
    # tconv 1.33-1.91, shuffle 1.09-1.75, bilinear -0.06-0.00, nearest below -0.36; at 32 px and
    # width 4 or 8 the same order (tconv 1.6-2.4, bilinear below 0.1).
    z = np.random.default_rng(100 + seed).normal(0.0, 3.0, (32, 16)).astype(np.float32)
    contrast = {}
    for upsample in ("tconv", "bilinear"):
        images = np.asarray(_untrained_generator_images(_key(seed), z, upsample), np.float64)
        assert images.shape == (32, 16, 16, 3) and images.min() >= 0.0 and images.max() <= 1.0
        contrast[upsample] = _nyquist_contrast(images)
    assert contrast["tconv"] > 1.0, contrast
    assert contrast["bilinear"] < 0.5, contrast


@nnx.jit
def _normalized_kernels(convs):
    return [c.normalized_kernel() for c in convs]


def test_spectral_norm_brings_the_top_singular_value_to_one():
    d = gz.init_model(gz.Discriminator, _key(0), width=4, spectral_norm=True, image_size=8)
    convs = [m for _, m in nnx.iter_graph(d) if isinstance(m, gz.SpectralConv)]
    assert len(convs) == 2  # the stride-2 convolution and the head
    for c in convs:  # make every top singular value clearly larger than 1 to begin with
        c.kernel[...] = jnp.asarray(3.0 * np.asarray(c.kernel[...]))
    kernels = [np.asarray(c.kernel[...]) for c in convs]
    x = np.random.default_rng(0).random((2, 8, 8, 3), np.float32)
    d.train()
    for _ in range(30):  # power iteration: one step per call in training mode
        _apply(d, x)
    for conv, kernel, normalized in zip(convs, kernels, _normalized_kernels(convs)):
        np.testing.assert_array_equal(conv.kernel[...], kernel)  # the stored weights are never rescaled
        w = np.asarray(normalized).reshape(-1, kernel.shape[-1])
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False)[0], 1.0, atol=2e-3)
        assert np.linalg.svd(kernel.reshape(w.shape), compute_uv=False)[0] > 2.0
    # In eval mode the power-iteration vector stays put.
    d.eval()
    before = [np.asarray(c.u[...]) for c in convs]
    _apply(d, x)
    for conv, u in zip(convs, before):
        np.testing.assert_array_equal(conv.u[...], u)


def test_bad_arguments_are_refused():
    rngs = nnx.Rngs(0)  # every check fires before a parameter is drawn
    with pytest.raises(ValueError, match="upsample='deconv'"):
        gz.Generator(8, 4, "deconv", rngs=rngs)
    with pytest.raises(ValueError, match="image_size=48"):
        gz.Generator(8, 4, image_size=48, rngs=rngs)
    with pytest.raises(ValueError, match="norm='spectral'"):
        gz.Generator(8, 4, norm="spectral", rngs=rngs)
    with pytest.raises(ValueError, match="width=0"):
        gz.Discriminator(0, rngs=rngs)
    with pytest.raises(ValueError, match="family='stylegan'"):
        gz.make_family("stylegan")
    g = nnx.eval_shape(lambda: gz.Generator(8, 2, "nearest", "none", 8, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"latents of shape \(batch, 8\)"):
        g(jnp.zeros((2, 7)))
    d = nnx.eval_shape(lambda: gz.Discriminator(2, image_size=8, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="built for 8x8"):
        d(jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="divisible by 4"):
        nnx.eval_shape(lambda: gz.Resynthesizer(2, "nearest", rngs=nnx.Rngs(0)))(jnp.zeros((1, 10, 10, 3)))
