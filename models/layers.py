"""Shared building blocks: activation and normalization lookup by name.

Convention used by every frugal model (transforms rely on it): a module that applies an
element-wise activation stores it in an attribute named `activation` and calls
`self.activation(x)`. Transforms such as `frugal.transforms.activations.activation_memory` swap that
attribute on a copy of the model, so model code never changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from flax import nnx

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": jax.nn.mish,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "hard_swish": jax.nn.hard_swish,
    "squareplus": jax.nn.squareplus,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jax.numpy.tanh,
}

NORMS = ("batch", "group", "layer", "none")


def resolve_activation(activation: str | Activation) -> Activation:
    """Returns the activation function for a name in ACTIVATIONS, or the callable itself."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(f"activation={activation!r} is not known; use a callable or one of {sorted(ACTIVATIONS)}")


class Identity(nnx.Module):
    def __call__(self, x):
        return x


def make_norm(norm: str | Callable[..., nnx.Module], num_features: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """A normalization layer over the last (channel) axis.

    `norm` is one of NORMS or a factory `f(num_features, rngs=rngs) -> nnx.Module`. Group norm uses
    min(32, channels) groups that divide the channel count.
    """
    if callable(norm) and not isinstance(norm, str):
        return norm(num_features, rngs=rngs)
    if norm == "batch":
        return nnx.BatchNorm(num_features, momentum=0.9, epsilon=1e-5, rngs=rngs)
    if norm == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if num_features % g == 0 and g <= num_features)
        return nnx.GroupNorm(num_features, num_groups=groups, rngs=rngs)
    if norm == "layer":
        return nnx.LayerNorm(num_features, rngs=rngs)
    if norm == "none":
        return Identity()
    raise ValueError(f"norm={norm!r} is not known; use a factory or one of {list(NORMS)}")
