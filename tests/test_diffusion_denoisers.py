"""The mel denoisers: shapes, a zero start, padding that cannot leak into valid frames, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.diffusion_denoisers import UNet2DDenoiser, WaveNetDenoiser, step_embedding


def _inputs(frames=24, mels=8, batch=2, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return (
        jax.random.normal(k1, (batch, frames, mels)),
        jnp.array([3, 17])[:batch],
        jax.random.normal(k2, (batch, frames, mels)),
    )


def test_step_embedding_is_sin_cos_of_scaled_steps():
    emb = np.asarray(step_embedding(jnp.array([0, 5]), 8))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
    np.testing.assert_allclose(emb[1], np.concatenate([np.sin(5 * freqs), np.cos(5 * freqs)]), rtol=1e-5)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_wavenet_starts_at_zero_and_depends_on_step_and_condition():
    model = WaveNetDenoiser(8, channels=8, layers=3, rngs=nnx.Rngs(0))
    x, t, c = _inputs()
    assert model(x, t, c).shape == x.shape and float(jnp.abs(model(x, t, c)).max()) == 0.0
    model.output_proj.kernel[...] = jax.random.normal(jax.random.key(1), model.output_proj.kernel.shape)
    base = model(x, t, c)
    assert float(jnp.abs(model(x, t + 1, c) - base).max()) > 1e-4
    assert float(jnp.abs(model(x, t, c + 1) - base).max()) > 1e-4


def test_wavenet_valid_frames_ignore_whatever_is_in_the_padding():
    model = WaveNetDenoiser(8, channels=8, layers=4, dilation_cycle=3, rngs=nnx.Rngs(0))
    model.output_proj.kernel[...] = jax.random.normal(jax.random.key(1), model.output_proj.kernel.shape)
    x, t, c = _inputs()
    mask = jnp.arange(24)[None, :] < jnp.array([[15], [24]])
    out = model(x, t, c, mask)
    x2 = jnp.where(mask[..., None], x, 50.0)
    c2 = jnp.where(mask[..., None], c, -50.0)
    out2 = model(x2, t, c2, mask)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-5)
    assert float(jnp.abs(out[0, 15:]).max()) == 0.0
    # The same utterance alone, unpadded, gives the same valid frames.
    alone = model(x[:1, :15], t[:1], c[:1, :15])
    np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(out[0, :15]), atol=1e-5)


def test_unet_shapes_and_zero_start():
    model = UNet2DDenoiser(8, dim=8, mults=(1, 2), groups=4, rngs=nnx.Rngs(0))
    x, t, c = _inputs(frames=8)
    out = model(x, t, c, jnp.ones((2, 8), bool))
    assert out.shape == x.shape and float(jnp.abs(out).max()) == 0.0
    model.final.kernel[...] = jnp.ones(model.final.kernel.shape)
    assert float(jnp.abs(model(x, t, c)).max()) > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, t, c: m(x[..., :4], t, c), "x_t must be"),
        (lambda m, x, t, c: m(x, t, c[:, :5]), "cond must have"),
        (lambda m, x, t, c: m(x, t[:1], c), "t must be"),
        (lambda m, x, t, c: m(x, t, c, jnp.ones((2, 3), bool)), "mask must be"),
    ],
)
def test_bad_inputs_are_named(call, match):
    x, t, c = _inputs()
    with pytest.raises(ValueError, match=match):
        call(WaveNetDenoiser(8, channels=8, layers=1, rngs=nnx.Rngs(0)), x, t, c)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="channels must be even"):
        WaveNetDenoiser(8, channels=7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size"):
        WaveNetDenoiser(8, kernel_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet2DDenoiser(8, dim=8, mults=(1, 2), groups=4, rngs=nnx.Rngs(0))(*_inputs(frames=23))
    with pytest.raises(ValueError, match="groups"):
        UNet2DDenoiser(8, dim=6, mults=(1, 2), groups=4, rngs=nnx.Rngs(0))
