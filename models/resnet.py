"""ResNets in Flax NNX: ImageNet-style ResNet-18/50 and CIFAR-style ResNet-20/ResNet-18.

Inputs are NHWC float arrays. The activation and the normalization are constructor arguments
(names from `frugal.models.layers` or callables), because later transforms swap activations and quantize
convolutions without touching this code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.models.layers import make_norm, resolve_activation
from frugal.transforms.initializers import Conv, Linear, variance_scaling


def _conv(in_ch, out_ch, kernel, stride, *, rngs):
    return Conv(
        in_ch,
        out_ch,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        use_bias=False,
        kernel_init=variance_scaling(2.0, "fan_out", "normal"),
        rngs=rngs,
    )


def _projection_shortcut(in_ch: int, out_ch: int, stride: int, norm, rngs: nnx.Rngs):
    """(1x1 conv, norm) when the block changes shape, else (None, None): the identity shortcut."""
    if stride != 1 or in_ch != out_ch:
        return _conv(in_ch, out_ch, 1, stride, rngs=rngs), make_norm(norm, out_ch, rngs=rngs)
    return None, None


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/20/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, *, activation, norm, rngs: nnx.Rngs):
        out_ch = width * self.expansion
        self.conv1 = _conv(in_ch, width, 3, stride, rngs=rngs)
        self.norm1 = make_norm(norm, width, rngs=rngs)
        self.conv2 = _conv(width, out_ch, 3, 1, rngs=rngs)
        self.norm2 = make_norm(norm, out_ch, rngs=rngs)
        self.activation = activation
        self.shortcut_conv, self.shortcut_norm = _projection_shortcut(in_ch, out_ch, stride, norm, rngs)

    def __call__(self, x):
        y = self.activation(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        return self.activation(y + shortcut)


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 -> 1x1 convolutions with 4x expansion (ResNet-50/101/152); stride on the 3x3."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, *, activation, norm, rngs: nnx.Rngs):
        out_ch = width * self.expansion
        self.conv1 = _conv(in_ch, width, 1, 1, rngs=rngs)
        self.norm1 = make_norm(norm, width, rngs=rngs)
        self.conv2 = _conv(width, width, 3, stride, rngs=rngs)
        self.norm2 = make_norm(norm, width, rngs=rngs)
        self.conv3 = _conv(width, out_ch, 1, 1, rngs=rngs)
        self.norm3 = make_norm(norm, out_ch, rngs=rngs)
        self.activation = activation
        self.shortcut_conv, self.shortcut_norm = _projection_shortcut(in_ch, out_ch, stride, norm, rngs)

    def __call__(self, x):
        y = self.activation(self.norm1(self.conv1(x)))
        y = self.activation(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        shortcut = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        return self.activation(y + shortcut)


class ResNet(nnx.Module):
    """A ResNet with a configurable stem, stage layout, activation and normalization.

    stem="imagenet": 7x7/2 convolution + 3x3/2 max-pool (ResNet-18/50 on 224x224 inputs).
    stem="cifar": one 3x3/1 convolution (ResNet-20 and the CIFAR ResNet-18 on 32x32 inputs).
    """

    def __init__(
        self,
        *,
        block: str,
        stage_sizes: Sequence[int],
        stage_widths: Sequence[int],
        stem: str,
        num_classes: int,
        in_channels: int = 3,
        activation: str | Callable = "relu",
        norm: str | Callable = "batch",
        rngs: nnx.Rngs,
    ):
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block={block!r}: use 'basic' or 'bottleneck'")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem={stem!r}: use 'imagenet' or 'cifar'")
        if len(stage_sizes) != len(stage_widths):
            raise ValueError("stage_sizes and stage_widths must have the same length")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes={num_classes} and in_channels={in_channels} must be >= 1")
        self.activation = resolve_activation(activation)
        block_cls = BasicBlock if block == "basic" else Bottleneck
        stem_width = stage_widths[0]
        self.stem_kind = stem
        if stem == "imagenet":
            self.stem_conv = _conv(in_channels, stem_width, 7, 2, rngs=rngs)
        else:
            self.stem_conv = _conv(in_channels, stem_width, 3, 1, rngs=rngs)
        self.stem_norm = make_norm(norm, stem_width, rngs=rngs)
        blocks = []
        in_ch = stem_width
        for stage, (size, width) in enumerate(zip(stage_sizes, stage_widths)):
            for i in range(size):
                stride = 2 if (i == 0 and stage > 0) else 1
                blocks.append(block_cls(in_ch, width, stride, activation=self.activation, norm=norm, rngs=rngs))
                in_ch = width * block_cls.expansion
        self.blocks = nnx.List(blocks)
        self.head = Linear(in_ch, num_classes, rngs=rngs)
        self.num_features = in_ch

    def features(self, x: jax.Array) -> jax.Array:
        """The pooled penultimate features, shape (batch, num_features)."""
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC images of rank 4, got shape {x.shape}")
        x = self.activation(self.stem_norm(self.stem_conv(x)))
        if self.stem_kind == "imagenet":
            x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for block in self.blocks:
            x = block(x)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def resnet18(num_classes: int = 1000, **kw) -> ResNet:
    return ResNet(
        block="basic",
        stage_sizes=(2, 2, 2, 2),
        stage_widths=(64, 128, 256, 512),
        stem="imagenet",
        num_classes=num_classes,
        **kw,
    )


def resnet50(num_classes: int = 1000, **kw) -> ResNet:
    return ResNet(
        block="bottleneck",
        stage_sizes=(3, 4, 6, 3),
        stage_widths=(64, 128, 256, 512),
        stem="imagenet",
        num_classes=num_classes,
        **kw,
    )


def cifar_resnet20(num_classes: int = 10, width: int = 16, **kw) -> ResNet:
    return ResNet(
        block="basic",
        stage_sizes=(3, 3, 3),
        stage_widths=(width, 2 * width, 4 * width),
        stem="cifar",
        num_classes=num_classes,
        **kw,
    )


def cifar_resnet18(num_classes: int = 10, width: int = 64, **kw) -> ResNet:
    return ResNet(
        block="basic",
        stage_sizes=(2, 2, 2, 2),
        stage_widths=(width, 2 * width, 4 * width, 8 * width),
        stem="cifar",
        num_classes=num_classes,
        **kw,
    )


def cifar_resnet8(num_classes: int = 10, width: int = 16, **kw) -> ResNet:
    """A three-stage, one-block-per-stage ResNet: the smallest member, for tests and quick tours."""
    return ResNet(
        block="basic",
        stage_sizes=(1, 1, 1),
        stage_widths=(width, 2 * width, 4 * width),
        stem="cifar",
        num_classes=num_classes,
        **kw,
    )
