"""Benchmark models for activation-memory studies; each follows the activation convention.

Every module that applies an element-wise activation keeps it in `self.activation` (see
`frugal.models.layers`), so `frugal.transforms.activation_policy.activation_memory` can swap it on a copy.

- `BertEncoder`: a BERT-base-shaped post-LN encoder stack (hidden 768, 12 heads, FFN 3072, GELU).
- `MobileNetSiLU`: a MobileNetV2/EfficientNet-style CNN of inverted-residual blocks with SiLU.
- `MishCNN`: a plain VGG-style convolution stack with Mish.
- `GeluMLP`: an MLP-dominated model (residual 768 -> 3072 -> 768 blocks, GELU-tanh), the shape
  of a transformer's feed-forward half, where the activation dominates the saved tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

from frugal.models.layers import make_norm, resolve_activation
from frugal.transforms.initializers import Conv, Embed, Linear, lecun_normal


class FeedForward(nnx.Module):
    """Linear -> activation -> Linear, the transformer MLP."""

    def __init__(self, dim: int, hidden: int, *, activation, rngs: nnx.Rngs):
        self.up = Linear(dim, hidden, rngs=rngs)
        self.down = Linear(hidden, dim, rngs=rngs)
        self.activation = resolve_activation(activation)

    def __call__(self, x):
        return self.down(self.activation(self.up(x)))


class EncoderLayer(nnx.Module):
    """Post-LN transformer encoder layer as in BERT: x = LN(x + MHA(x)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, *, activation, rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=dim, decode=False, kernel_init=lecun_normal(), rngs=rngs
        )
        self.attention_norm = nnx.LayerNorm(dim, epsilon=1e-12, rngs=rngs)
        self.feed_forward = FeedForward(dim, hidden, activation=activation, rngs=rngs)
        self.output_norm = nnx.LayerNorm(dim, epsilon=1e-12, rngs=rngs)

    def __call__(self, x):
        x = self.attention_norm(x + self.attention(x))
        return self.output_norm(x + self.feed_forward(x))


class BertEncoder(nnx.Module):
    """Token embeddings + a stack of BERT-shaped encoder layers + a mean-pooled classifier head.

    Defaults are BERT-base's layer shape (768 hidden, 12 heads, 3072 FFN, GELU erf); `num_layers`
    and `vocab_size` are small by default so the benchmark fits a laptop. Input: int token ids of
    shape (batch, seq).
    """

    def __init__(
        self,
        *,
        num_layers: int = 2,
        dim: int = 768,
        heads: int = 12,
        hidden: int = 3072,
        vocab_size: int = 1024,
        max_len: int = 512,
        num_classes: int = 2,
        activation: str | Callable = "gelu",
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        self.max_len = max_len
        self.token_embed = Embed(vocab_size, dim, rngs=rngs)
        self.position_embed = Embed(max_len, dim, rngs=rngs)
        self.embed_norm = nnx.LayerNorm(dim, epsilon=1e-12, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(dim, heads, hidden, activation=activation, rngs=rngs) for _ in range(num_layers)]
        )
        self.head = Linear(dim, num_classes, rngs=rngs)

    def __call__(self, tokens):
        if tokens.ndim != 2:
            raise ValueError(f"BertEncoder expects token ids of shape (batch, seq), got {tokens.shape}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={self.max_len}")
        x = self.token_embed(tokens) + self.position_embed(jnp.arange(tokens.shape[1]))[None]
        x = self.embed_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(jnp.mean(x, axis=1))


class InvertedResidual(nnx.Module):
    """MobileNetV2 block: 1x1 expand -> depthwise 3x3 -> 1x1 project (+ residual when shapes match)."""

    def __init__(self, in_ch: int, out_ch: int, *, expand: int, stride: int, activation, norm, rngs: nnx.Rngs):
        mid = in_ch * expand
        self.expand_conv = Conv(in_ch, mid, (1, 1), use_bias=False, rngs=rngs)
        self.expand_norm = make_norm(norm, mid, rngs=rngs)
        self.depthwise = Conv(
            mid, mid, (3, 3), strides=(stride, stride), feature_group_count=mid, use_bias=False, rngs=rngs
        )
        self.depthwise_norm = make_norm(norm, mid, rngs=rngs)
        self.project = Conv(mid, out_ch, (1, 1), use_bias=False, rngs=rngs)
        self.project_norm = make_norm(norm, out_ch, rngs=rngs)
        self.activation = resolve_activation(activation)
        self.residual = stride == 1 and in_ch == out_ch

    def __call__(self, x):
        y = self.activation(self.expand_norm(self.expand_conv(x)))
        y = self.activation(self.depthwise_norm(self.depthwise(y)))
        y = self.project_norm(self.project(y))
        return x + y if self.residual else y


class MobileNetSiLU(nnx.Module):
    """A small MobileNetV2/EfficientNet-style classifier for NHWC images (SiLU by default).

    `stages` lists (out_channels, num_blocks, first_stride); each block expands channels by
    `expand`.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: int = 32,
        stages: Sequence[tuple[int, int, int]] = ((32, 2, 1), (48, 2, 2), (64, 2, 2)),
        expand: int = 4,
        activation: str | Callable = "silu",
        norm: str = "batch",
        rngs: nnx.Rngs,
    ):
        self.stem_conv = Conv(in_channels, stem, (3, 3), use_bias=False, rngs=rngs)
        self.stem_norm = make_norm(norm, stem, rngs=rngs)
        self.activation = resolve_activation(activation)
        blocks, ch = [], stem
        for out_ch, count, stride in stages:
            for i in range(count):
                blocks.append(
                    InvertedResidual(
                        ch,
                        out_ch,
                        expand=expand,
                        stride=stride if i == 0 else 1,
                        activation=self.activation,
                        norm=norm,
                        rngs=rngs,
                    )
                )
                ch = out_ch
        self.blocks = nnx.List(blocks)
        self.head = Linear(ch, num_classes, rngs=rngs)

    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"MobileNetSiLU expects NHWC images of rank 4, got shape {x.shape}")
        x = self.activation(self.stem_norm(self.stem_conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


class ConvActivation(nnx.Module):
    def __init__(self, in_ch: int, out_ch: int, *, stride: int, activation, norm, rngs: nnx.Rngs):
        self.conv = Conv(in_ch, out_ch, (3, 3), strides=(stride, stride), use_bias=norm == "none", rngs=rngs)
        self.norm = make_norm(norm, out_ch, rngs=rngs)
        self.activation = resolve_activation(activation)

    def __call__(self, x):
        return self.activation(self.norm(self.conv(x)))


class MishCNN(nnx.Module):
    """A VGG-style stack of 3x3 convolutions with Mish; `widths` per stage, two convs per stage.

    norm="none" by default (bias instead), as in plain Mish CNN baselines; pass "batch" or
    "group" to add normalization (its saved tensors then dilute the activation's share).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 2,
        activation: str | Callable = "mish",
        norm: str = "none",
        rngs: nnx.Rngs,
    ):
        layers, ch = [], in_channels
        for stage, width in enumerate(widths):
            for i in range(convs_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(ConvActivation(ch, width, stride=stride, activation=activation, norm=norm, rngs=rngs))
                ch = width
        self.layers = nnx.List(layers)
        self.head = Linear(ch, num_classes, rngs=rngs)

    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"MishCNN expects NHWC images of rank 4, got shape {x.shape}")
        for layer in self.layers:
            x = layer(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


class GeluMLP(nnx.Module):
    """Residual feed-forward blocks x + FFN(x) (768 -> 3072 -> 768, GELU-tanh) on (tokens, dim) rows.

    The FFN half of a transformer without attention: the activation's tensors are the largest
    saved ones, which is where storing f'(x) alone pays most.
    """

    def __init__(
        self,
        *,
        num_layers: int = 6,
        dim: int = 768,
        hidden: int = 3072,
        num_classes: int = 10,
        activation: str | Callable = "gelu_tanh",
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        self.dim = dim
        self.layers = nnx.List([FeedForward(dim, hidden, activation=activation, rngs=rngs) for _ in range(num_layers)])
        self.head = Linear(dim, num_classes, rngs=rngs)

    def __call__(self, x):
        if x.shape[-1] != self.dim:
            raise ValueError(f"GeluMLP expects inputs with last dimension {self.dim}, got shape {x.shape}")
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)
