"""Denoisers for mel-spectrogram diffusion, conditioned on a base model's mel.

* `WaveNetDenoiser`: the non-causal 1-D WaveNet of DiffWave (Kong et al. 2021, arXiv 2009.09761) as
  DiffSpeech uses it for mels (Liu et al. 2022, arXiv 2105.02446; github.com/MoonInTheRiver/DiffSinger,
  `DiffNet`): the mel bins are channels, time is the convolved axis. Each residual layer adds a
  projection of the step embedding, runs a dilated convolution (dilation 2^(i mod cycle)), adds a 1x1
  projection of the conditioning, gates with tanh * sigmoid and splits into a residual and a skip path;
  skips are summed over layers and scaled by 1/sqrt(layers). The output projection starts at zero so
  an untrained model predicts 0.
* `UNet2DDenoiser`: a small Grad-TTS-style 2-D U-Net (Popov et al. 2021, arXiv 2105.06337;
  github.com/huawei-noah/Speech-Backbones, `GradLogPEstimator2d`) over (frames x mel bins) with the
  conditioning stacked as a second input channel; ResNet blocks (conv 3x3, GroupNorm, Mish, step
  embedding added), stride-2 down- and up-sampling. The linear-attention blocks of Grad-TTS are left
  out (they cost the most on a CPU; `attention` is not offered rather than faked). The frame count must
  be divisible by 2^(levels - 1).

Both take `x_t [batch, frames, mels]`, `t [batch]` (int step indices), `cond [batch, frames, mels]` and
an optional `mask [batch, frames]`, and return `[batch, frames, mels]`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.transforms.initializers import Conv, ConvTranspose, Linear


def step_embedding(t: jax.Array, dim: int, scale: float = 1.0) -> jax.Array:
    """Sinusoidal embedding of (scaled) step indices, `[batch] -> [batch, dim]` (Transformer positions)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    angles = scale * t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def _mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


def _check_inputs(x_t, t, cond, mask, n_mels):
    if x_t.ndim != 3 or x_t.shape[-1] != n_mels:
        raise ValueError(f"x_t must be [batch, frames, {n_mels}], got shape {x_t.shape}")
    if cond.shape != x_t.shape:
        raise ValueError(f"cond must have x_t's shape {x_t.shape}, got {cond.shape}")
    if t.shape != (x_t.shape[0],):
        raise ValueError(f"t must be [batch] = ({x_t.shape[0]},) step indices, got shape {t.shape}")
    if mask is not None and mask.shape != x_t.shape[:2]:
        raise ValueError(f"mask must be [batch, frames] = {x_t.shape[:2]}, got shape {mask.shape}")


class _ResidualLayer(nnx.Module):
    def __init__(self, channels: int, dilation: int, kernel_size: int, *, rngs: nnx.Rngs):
        self.step_proj = Linear(channels, channels, rngs=rngs)
        self.conv = Conv(
            channels, 2 * channels, kernel_size=(kernel_size,), kernel_dilation=(dilation,), padding="SAME", rngs=rngs
        )
        self.cond_proj = Conv(channels, 2 * channels, kernel_size=(1,), rngs=rngs)
        self.out = Conv(channels, 2 * channels, kernel_size=(1,), rngs=rngs)

    def __call__(self, x, step, cond, m):
        h = x + self.step_proj(step)[:, None, :]
        if m is not None:  # the dilated conv must read zeros past the end, as it does unpadded
            h = h * m
        h = self.conv(h) + self.cond_proj(cond)
        gate, filt = jnp.split(h, 2, axis=-1)
        h = jax.nn.sigmoid(gate) * jnp.tanh(filt)
        residual, skip = jnp.split(self.out(h), 2, axis=-1)
        return (x + residual) / math.sqrt(2.0), skip


class WaveNetDenoiser(nnx.Module):
    """DiffSpeech's WaveNet denoiser; the defaults (128 channels, 12 layers) are the CPU size (DiffSpeech: 256, 20)."""

    def __init__(
        self,
        n_mels: int = 80,
        *,
        channels: int = 128,
        layers: int = 12,
        dilation_cycle: int = 4,
        kernel_size: int = 3,
        rngs: nnx.Rngs,
    ):
        for name, value in (("n_mels", n_mels), ("channels", channels), ("layers", layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if channels % 2:
            raise ValueError(f"channels must be even (the step embedding is sin/cos pairs), got {channels}")
        if dilation_cycle < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"need dilation_cycle >= 1 and an odd kernel_size, got {dilation_cycle} and {kernel_size}")
        self.n_mels, self.channels = n_mels, channels
        self.input_proj = Conv(n_mels, channels, kernel_size=(1,), rngs=rngs)
        self.cond_in = Conv(n_mels, channels, kernel_size=(1,), rngs=rngs)
        self.mlp_in = Linear(channels, 4 * channels, rngs=rngs)
        self.mlp_out = Linear(4 * channels, channels, rngs=rngs)
        self.layers = nnx.List(
            [_ResidualLayer(channels, 2 ** (i % dilation_cycle), kernel_size, rngs=rngs) for i in range(layers)]
        )
        self.skip_proj = Conv(channels, channels, kernel_size=(1,), rngs=rngs)
        self.output_proj = Conv(channels, n_mels, kernel_size=(1,), kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x_t, t, cond, mask=None):
        _check_inputs(x_t, t, cond, mask, self.n_mels)
        m = None if mask is None else mask[..., None].astype(x_t.dtype)
        x = jax.nn.relu(self.input_proj(x_t))
        c = self.cond_in(cond)
        step = self.mlp_out(_mish(self.mlp_in(step_embedding(t, self.channels))))
        skips = 0.0
        for layer in self.layers:
            x, skip = layer(x, step, c, m)
            skips = skips + skip
        h = jax.nn.relu(self.skip_proj(skips / math.sqrt(len(self.layers))))
        out = self.output_proj(h)
        return out if m is None else out * m


class _ResBlock2D(nnx.Module):
    def __init__(self, cin: int, cout: int, step_dim: int, groups: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv(cin, cout, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.norm1 = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        self.step = Linear(step_dim, cout, rngs=rngs)
        self.conv2 = Conv(cout, cout, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        self.skip = Conv(cin, cout, kernel_size=(1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x, step, m):
        h = _mish(self.norm1(self.conv1(x * m))) * m
        h = h + self.step(_mish(step))[:, None, None, :]
        h = _mish(self.norm2(self.conv2(h * m))) * m
        return h + (x if self.skip is None else self.skip(x * m))


class UNet2DDenoiser(nnx.Module):
    """Grad-TTS's 2-D U-Net without its attention blocks (`dim` base channels, `mults` per level)."""

    def __init__(self, n_mels: int = 80, *, dim: int = 32, mults: tuple[int, ...] = (1, 2, 4), groups: int = 8, rngs):
        if dim < 1 or not mults or any(k < 1 for k in mults):
            raise ValueError(f"need dim >= 1 and positive mults, got dim={dim}, mults={mults}")
        if any((dim * k) % groups for k in mults):
            raise ValueError(f"every level's channels (dim * mult) must be divisible by groups={groups}")
        self.n_mels, self.dim, self.levels = n_mels, dim, len(mults)
        if n_mels % 2 ** (self.levels - 1):
            raise ValueError(f"n_mels={n_mels} must be divisible by 2^(levels-1) = {2 ** (self.levels - 1)}")
        self.mlp_in = Linear(dim, 4 * dim, rngs=rngs)
        self.mlp_out = Linear(4 * dim, dim, rngs=rngs)
        chans = [2] + [dim * k for k in mults]
        self.downs = nnx.List()
        for i in range(self.levels):
            last = i == self.levels - 1
            self.downs.append(
                nnx.List(
                    [
                        _ResBlock2D(chans[i], chans[i + 1], dim, groups, rngs=rngs),
                        _ResBlock2D(chans[i + 1], chans[i + 1], dim, groups, rngs=rngs),
                        None
                        if last
                        else Conv(chans[i + 1], chans[i + 1], kernel_size=(3, 3), strides=2, padding=1, rngs=rngs),
                    ]
                )
            )
        mid = chans[-1]
        self.mid1 = _ResBlock2D(mid, mid, dim, groups, rngs=rngs)
        self.mid2 = _ResBlock2D(mid, mid, dim, groups, rngs=rngs)
        self.ups = nnx.List()
        for i in reversed(range(1, self.levels)):
            self.ups.append(
                nnx.List(
                    [
                        _ResBlock2D(2 * chans[i + 1], chans[i], dim, groups, rngs=rngs),
                        _ResBlock2D(chans[i], chans[i], dim, groups, rngs=rngs),
                        ConvTranspose(
                            chans[i], chans[i], kernel_size=(4, 4), strides=(2, 2), padding="SAME", rngs=rngs
                        ),
                    ]
                )
            )
        self.final_block = Conv(chans[1], dim, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.final = Conv(dim, 1, kernel_size=(1, 1), kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x_t, t, cond, mask=None):
        _check_inputs(x_t, t, cond, mask, self.n_mels)
        factor = 2 ** (self.levels - 1)
        if x_t.shape[1] % factor:
            raise ValueError(f"the frame count ({x_t.shape[1]}) must be divisible by {factor} for this U-Net")
        if mask is None:
            mask = jnp.ones(x_t.shape[:2], bool)
        step = self.mlp_out(_mish(self.mlp_in(step_embedding(t, self.dim, 1.0))))
        x = jnp.stack([x_t, cond], axis=-1)  # [B, frames, mels, 2]
        masks = [mask.astype(x.dtype)[:, :, None, None]]
        for _ in range(self.levels - 1):
            masks.append(masks[-1][:, ::2])
        hiddens = []
        for i, (block1, block2, down) in enumerate(self.downs):
            m = masks[i]
            x = block2(block1(x, step, m), step, m)
            hiddens.append(x)
            if down is not None:
                x = down(x * m)
        m = masks[-1]
        x = self.mid2(self.mid1(x, step, m), step, m)
        for j, (block1, block2, up) in enumerate(self.ups):
            m = masks[self.levels - 1 - j]
            x = jnp.concatenate([x, hiddens.pop()], axis=-1)
            x = block2(block1(x, step, m), step, m)
            x = up(x * m)
        m = masks[0]
        x = _mish(self.final_block(x * m))
        return self.final(x * m)[..., 0] * mask.astype(x.dtype)[..., None]
