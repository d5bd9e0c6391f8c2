"""Vision Longformer (ViL, Zhang et al. 2021) in Flax NNX: multi-scale stages with 2-D window attention.

Each stage: a patch embedding (a strided convolution over the image or the previous stage's grid)
gives an H x W grid of tokens; `num_global` global tokens (learned in stage 1, projected from the
previous stage's global tokens later) are put first; pre-norm transformer blocks attend with
`AttentionPattern.vil(H, W, window, num_global)`: each grid token sees a window x window
neighbourhood plus the global tokens, each global token sees everything. The classifier reads the
final global token(s), averaged. Positions are learned per row and per column (added), a simplification
of ViL's relative position bias.

The paper's ViL-Small (224 px): patch 4/2/2/2, dims 96/192/384/768, depths 1/2/8/1, heads 3/3/6/12,
a 15x15 window and one global token; `ViLConfig.small_224()` builds that layout. The defaults are a
two-stage model sized for 32 x 32 images.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from frugal.models.layers import resolve_activation
from frugal.transforms.attention import AttentionPattern, hybrid_attention
from frugal.transforms.initializers import Conv, Linear, normal


@dataclasses.dataclass(frozen=True)
class ViLStage:
    patch_size: int
    dim: int
    depth: int
    heads: int
    window: int = 15  # full window side, odd (15 -> 7 on each side)

    def __post_init__(self):
        for name in ("patch_size", "dim", "depth", "heads", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"ViLStage.{name}={getattr(self, name)} must be >= 1")
        if self.dim % self.heads:
            raise ValueError(f"ViLStage.dim={self.dim} must be divisible by heads={self.heads}")
        if self.window % 2 == 0:
            raise ValueError(
                f"ViLStage.window={self.window} must be odd (a window x window square centred on the token)"
            )


@dataclasses.dataclass(frozen=True)
class ViLConfig:
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    stages: tuple[ViLStage, ...] = (ViLStage(4, 64, 1, 2, 5), ViLStage(2, 96, 1, 3, 3))
    num_global: int = 1
    mlp_ratio: int = 2
    activation: str = "gelu"

    def __post_init__(self):
        if not self.stages:
            raise ValueError("stages must hold at least one ViLStage")
        if self.num_global < 1:
            raise ValueError(f"num_global={self.num_global} must be >= 1 (the classifier reads them)")
        size = self.image_size
        for i, stage in enumerate(self.stages):
            if size % stage.patch_size:
                raise ValueError(f"stage {i}: grid side {size} is not divisible by patch_size={stage.patch_size}")
            size //= stage.patch_size
        resolve_activation(self.activation)

    def grids(self) -> list[int]:
        sides, size = [], self.image_size
        for stage in self.stages:
            size //= stage.patch_size
            sides.append(size)
        return sides

    @classmethod
    def small_224(cls, num_classes: int = 1000) -> ViLConfig:
        return cls(
            image_size=224,
            num_classes=num_classes,
            stages=(
                ViLStage(4, 96, 1, 3, 15),
                ViLStage(2, 192, 2, 3, 15),
                ViLStage(2, 384, 8, 6, 15),
                ViLStage(2, 768, 1, 12, 15),
            ),
            mlp_ratio=4,
        )


class WindowAttention(nnx.Module):
    def __init__(self, dim: int, heads: int, pattern: AttentionPattern, *, rngs: nnx.Rngs):
        self.qkv = Linear(dim, 3 * dim, rngs=rngs)
        self.proj = Linear(dim, dim, rngs=rngs)
        self.heads = heads
        self.pattern = pattern

    def __call__(self, x, impl: str = "auto"):
        b, n, dim = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, self.heads, dim // self.heads), 3, axis=2)
        out = hybrid_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], self.pattern, impl=impl)
        return self.proj(out.reshape(b, n, dim))


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, activation, *, rngs: nnx.Rngs):
        self.fc1 = Linear(dim, hidden, rngs=rngs)
        self.fc2 = Linear(hidden, dim, rngs=rngs)
        self.activation = activation

    def __call__(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, pattern: AttentionPattern, mlp_ratio: int, activation, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = WindowAttention(dim, heads, pattern, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp = Mlp(dim, dim * mlp_ratio, activation, rngs=rngs)

    def __call__(self, x, impl="auto"):
        x = x + self.attn(self.norm1(x), impl)
        return x + self.mlp(self.norm2(x))


class Stage(nnx.Module):
    def __init__(
        self,
        stage: ViLStage,
        in_channels: int,
        in_global_dim: int | None,
        side: int,
        num_global: int,
        mlp_ratio: int,
        activation,
        *,
        rngs: nnx.Rngs,
    ):
        self.patch = Conv(
            in_channels,
            stage.dim,
            kernel_size=(stage.patch_size,) * 2,
            strides=(stage.patch_size,) * 2,
            padding="VALID",
            rngs=rngs,
        )
        self.norm = nnx.LayerNorm(stage.dim, rngs=rngs)
        if in_global_dim is None:
            self.global_tokens = nnx.Param(normal(0.02)(rngs.params(), (1, num_global, stage.dim)))
            self.global_proj = None
        else:
            self.global_tokens = None
            self.global_proj = Linear(in_global_dim, stage.dim, rngs=rngs)
        self.row_pos = nnx.Param(normal(0.02)(rngs.params(), (side, 1, stage.dim)))
        self.col_pos = nnx.Param(normal(0.02)(rngs.params(), (1, side, stage.dim)))
        pattern = AttentionPattern.vil(side, side, window=stage.window, num_global=num_global)
        self.blocks = nnx.List(
            [Block(stage.dim, stage.heads, pattern, mlp_ratio, activation, rngs=rngs) for _ in range(stage.depth)]
        )
        self.num_global = num_global

    def __call__(self, grid, global_in, impl="auto"):
        x = self.patch(grid)  # (b, H, W, dim)
        b, h, w, dim = x.shape
        x = self.norm(x + self.row_pos[...] + self.col_pos[...]).reshape(b, h * w, dim)
        if self.global_proj is None:
            g = jnp.broadcast_to(self.global_tokens[...], (b, self.num_global, dim))
        else:
            g = self.global_proj(global_in)
        x = jnp.concatenate([g, x], axis=1)
        for block in self.blocks:
            x = block(x, impl)
        return x[:, self.num_global :].reshape(b, h, w, dim), x[:, : self.num_global]


class ViL(nnx.Module):
    """Vision Longformer classifier: images (b, H, W, C) -> logits (b, num_classes)."""

    def __init__(self, config: ViLConfig, *, rngs: nnx.Rngs):
        self.config = config
        activation = resolve_activation(config.activation)
        stages, channels, global_dim = [], config.in_channels, None
        for stage, side in zip(config.stages, config.grids()):
            stages.append(
                Stage(stage, channels, global_dim, side, config.num_global, config.mlp_ratio, activation, rngs=rngs)
            )
            channels = global_dim = stage.dim
        self.stages = nnx.List(stages)
        self.norm = nnx.LayerNorm(channels, rngs=rngs)
        self.head = Linear(channels, config.num_classes, rngs=rngs)
        self.impl = "auto"

    def __call__(self, images):
        expected = (self.config.image_size, self.config.image_size, self.config.in_channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"images must be (batch, {expected[0]}, {expected[1]}, {expected[2]}), got {images.shape}")
        grid, glob = images, None
        for stage in self.stages:
            grid, glob = stage(grid, glob, self.impl)
        return self.head(self.norm(glob).mean(axis=1))


__all__ = ["ViL", "ViLConfig", "ViLStage"]
