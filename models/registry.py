"""Models by name, for the command line and configs."""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from frugal.models import resnet

IMAGE_MODELS: dict[str, Callable[..., nnx.Module]] = {
    "resnet18": resnet.resnet18,
    "resnet50": resnet.resnet50,
    "cifar_resnet8": resnet.cifar_resnet8,
    "cifar_resnet20": resnet.cifar_resnet20,
    "cifar_resnet18": resnet.cifar_resnet18,
}


def create_image_model(name: str, *, num_classes: int, in_channels: int, seed: int = 0, **kwargs) -> nnx.Module:
    """Builds an image classifier by name; kwargs (activation, norm, width) go to its constructor."""
    if name not in IMAGE_MODELS:
        raise ValueError(f"model={name!r} is not known; choose one of {sorted(IMAGE_MODELS)}")
    return IMAGE_MODELS[name](num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(seed), **kwargs)
