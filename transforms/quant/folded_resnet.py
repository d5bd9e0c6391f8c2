"""A frugal ResNet as static structure plus arrays, with BatchNorm folded into the convolutions.

Block reconstruction (:mod:`frugal.transforms.quant.block_recon`) must own each block's weights and
activation quantizers, so rather than intercepting the NNX model it works on this functional form:

* :func:`fold_resnet` reads a :class:`frugal.models.resnet.ResNet` (BasicBlock or Bottleneck blocks) into a
  :class:`NetworkSpec` (hashable, static) and float arrays, folding every BatchNorm into its conv.
* :func:`block_forward` / :func:`network_forward` run it, calling ``quant(name, value)`` wherever an
  activation quantizer sits: the block input ("in", shared by the residual branch and the
  shortcut) and between chained convolutions ("mid0", "mid1", ...); the stem input and the
  classifier input have their own.
* :class:`QuantizedResNet` is the result of post-training quantization (a pytree; call it on NHWC
  images); :func:`float_network` is the same form without quantizers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.transforms.quant.aquant import GridSpec, fake_quant_activation


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution's static part (its arrays live in the params dict under `name`)."""

    name: str
    strides: tuple[int, ...]
    padding: Any


@dataclasses.dataclass(frozen=True)
class ActSpec:
    """An activation quantizer: its grid and, for AQuant, its border granularity (None = nearest)."""

    name: str
    grid: GridSpec
    granularity: str | None = None


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """A residual block: convolutions chained with activations in between, plus a shortcut."""

    chain: tuple[ConvSpec, ...]
    shortcut: ConvSpec | None
    acts: tuple[ActSpec, ...] = ()

    def act(self, name: str) -> ActSpec:
        return next(a for a in self.acts if a.name == name)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """The whole ResNet's static structure; `stem_act`/`head_act` are set once it is quantized."""

    activation: Callable
    stem: ConvSpec
    maxpool: bool
    blocks: tuple[BlockSpec, ...]
    stem_act: ActSpec | None = None
    head_act: ActSpec | None = None


def _folded_conv(conv: nnx.Conv, norm) -> dict:
    if conv.feature_group_count != 1 or conv.kernel_dilation not in (1, (1, 1)):
        raise ValueError("block reconstruction supports plain convolutions (no groups, no dilation)")
    w = jnp.asarray(conv.kernel[...], jnp.float32)
    b = jnp.zeros(w.shape[-1], jnp.float32) if conv.bias is None else jnp.asarray(conv.bias[...], jnp.float32)
    if isinstance(norm, nnx.BatchNorm):
        gamma = norm.scale[...] if norm.scale is not None else 1.0
        beta = norm.bias[...] if norm.bias is not None else 0.0
        factor = gamma / jnp.sqrt(norm.var[...] + norm.epsilon)
        w, b = w * factor, (b - norm.mean[...]) * factor + beta
    elif type(norm).__name__ != "Identity":
        raise ValueError(
            f"norm {type(norm).__name__} cannot be folded into a convolution; block "
            "reconstruction supports norm='batch' or norm='none'"
        )
    return {"w": w, "b": b}


def _conv_spec(name: str, conv: nnx.Conv) -> ConvSpec:
    strides = conv.strides if isinstance(conv.strides, tuple) else (conv.strides,) * 2
    return ConvSpec(name, tuple(int(s) for s in strides), conv.padding)


def fold_resnet(model: nnx.Module) -> tuple[NetworkSpec, dict]:
    """A frugal ResNet as ``(spec, float params)`` with BatchNorm folded into the convolutions."""
    if not all(hasattr(model, a) for a in ("stem_conv", "stem_norm", "blocks", "head", "activation")):
        layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, (nnx.Conv, nnx.Linear, nnx.Einsum))]
        if not layers:
            raise ValueError(f"model {type(model).__name__} has no quantizable layer (nnx.Conv or nnx.Linear)")
        raise ValueError(
            f"block reconstruction supports frugal ResNets (frugal.models.resnet); {type(model).__name__} is not one"
        )
    params = {
        "stem": _folded_conv(model.stem_conv, model.stem_norm),
        "blocks": [],
        "head": {
            "w": jnp.asarray(model.head.kernel[...], jnp.float32),
            "b": (
                jnp.zeros(model.head.out_features, jnp.float32)
                if model.head.bias is None
                else jnp.asarray(model.head.bias[...], jnp.float32)
            ),
        },
    }
    blocks = []
    for block in model.blocks:
        chain, weights, i = [], {}, 1
        while hasattr(block, f"conv{i}"):
            name = f"conv{i}"
            chain.append(_conv_spec(name, getattr(block, name)))
            weights[name] = _folded_conv(getattr(block, name), getattr(block, f"norm{i}"))
            i += 1
        if not chain:
            raise ValueError(f"block {type(block).__name__} has no conv1; not a ResNet block")
        shortcut = None
        if getattr(block, "shortcut_conv", None) is not None:
            shortcut = _conv_spec("shortcut", block.shortcut_conv)
            weights["shortcut"] = _folded_conv(block.shortcut_conv, block.shortcut_norm)
        blocks.append(BlockSpec(tuple(chain), shortcut))
        params["blocks"].append(weights)
    spec = NetworkSpec(
        model.activation,
        _conv_spec("stem", model.stem_conv),
        getattr(model, "stem_kind", "cifar") == "imagenet",
        tuple(blocks),
    )
    return spec, params


def apply_conv(x, p, spec: ConvSpec):
    """A folded convolution (NHWC input, HWIO kernel) plus its bias."""
    y = jax.lax.conv_general_dilated(x, p["w"], spec.strides, spec.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["b"]


def block_forward(spec: BlockSpec, weights: dict, x, quant: Callable, activation: Callable):
    """One residual block; ``quant(name, value)`` is applied at the block input ("in") and
    between chained convolutions ("mid0", "mid1", ...)."""
    xin = quant("in", x)
    y = xin
    for i, conv in enumerate(spec.chain):
        y = apply_conv(y, weights[conv.name], conv)
        if i < len(spec.chain) - 1:
            y = quant(f"mid{i}", activation(y))
    shortcut = xin if spec.shortcut is None else apply_conv(xin, weights["shortcut"], spec.shortcut)
    return activation(y + shortcut)


def no_quant(name, v):
    """The ``quant`` callback of a float forward pass."""
    return v


def activation_quantizer(act_spec: ActSpec, params: dict, temperature: float = 0.1):
    """``x -> fake-quantized x`` for one quantizer's params (scale, offset, optional border logits)."""
    return lambda v: fake_quant_activation(
        jnp.asarray(v),
        jnp.maximum(params["scale"], 1e-8),
        params["offset"],
        act_spec.grid,
        params.get("border"),
        temperature=temperature,
    )


def network_forward(spec: NetworkSpec, weights: dict, acts: dict | None, x):
    """The whole ResNet; ``acts=None`` runs it in float."""
    quantize = acts is not None
    if quantize:
        x = activation_quantizer(spec.stem_act, acts["stem"])(x)
    x = spec.activation(apply_conv(x, weights["stem"], spec.stem))
    if spec.maxpool:
        x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
    for i, block in enumerate(spec.blocks):
        quant = no_quant
        if quantize:
            quant = lambda name, v, b=block, a=acts["blocks"][i]: activation_quantizer(b.act(name), a[name])(v)
        x = block_forward(block, weights["blocks"][i], x, quant, spec.activation)
    features = jnp.mean(x, axis=(1, 2))
    if quantize:
        features = activation_quantizer(spec.head_act, acts["head"])(features)
    return features @ weights["head"]["w"] + weights["head"]["b"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedResNet:
    """A fake-quantized ResNet: hard-rounded (dequantized) weights and activation quantizers.

    ``acts[...]["border"]`` holds AQuant's border logits where they were learned.
    """

    weights: dict
    acts: dict | None
    spec: NetworkSpec = dataclasses.field(metadata=dict(static=True))

    def __call__(self, images):
        return _jitted_forward(self, jnp.asarray(images, jnp.float32))


@jax.jit
def _jitted_forward(net: QuantizedResNet, images):
    return network_forward(net.spec, net.weights, net.acts, images)


def float_network(model: nnx.Module) -> QuantizedResNet:
    """The folded float model in the same functional form (the reference the quantized ones chase)."""
    spec, params = fold_resnet(model)
    return QuantizedResNet(params, None, spec)
