"""ResNets: layouts match the published architectures, activation and norm are swappable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.registry import create_image_model
from frugal.models.resnet import cifar_resnet20, resnet18, resnet50


def _count(make):
    # Abstract construction: shapes only, no 25M random draws.
    model = nnx.eval_shape(make)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_parameter_counts_match_the_reference_architectures():
    # torchvision: resnet18 11,689,512 and resnet50 25,557,032 parameters (1000 classes).
    assert _count(lambda: resnet18(rngs=nnx.Rngs(0))) == 11_689_512
    assert _count(lambda: resnet50(rngs=nnx.Rngs(0))) == 25_557_032
    # He et al. 2016, CIFAR ResNet-20: 0.27M parameters (272,474 with BatchNorm affine terms).
    assert _count(lambda: cifar_resnet20(rngs=nnx.Rngs(0))) == 272_474


def test_output_shapes_and_imagenet_stem_downsampling():
    out = jax.eval_shape(lambda x: resnet18(num_classes=7, rngs=nnx.Rngs(0))(x), jnp.ones((2, 64, 64, 3)))
    assert out.shape == (2, 7)
    feats = jax.eval_shape(lambda x: resnet50(rngs=nnx.Rngs(0)).features(x), jnp.ones((1, 224, 224, 3)))
    assert feats.shape == (1, 2048)
    m = create_image_model("cifar_resnet8", num_classes=10, in_channels=1)
    assert m(jnp.ones((3, 8, 8, 1))).shape == (3, 10)
    with pytest.raises(ValueError, match="rank 4"):
        m(jnp.ones((8, 8, 1)))


def test_activation_and_norm_are_constructor_arguments():
    calls = []

    def traced_relu(x):
        calls.append(x.shape)
        return jax.nn.relu(x)

    m = create_image_model("cifar_resnet8", num_classes=10, in_channels=1, activation=traced_relu, norm="group")
    m(jnp.ones((1, 8, 8, 1)))
    assert len(calls) == 1 + 3 * 2  # stem + two per basic block
    assert all(b.activation is traced_relu for b in m.blocks)
    g = create_image_model("cifar_resnet8", num_classes=10, in_channels=1, activation="gelu", norm="none")
    out = g(jnp.linspace(-1, 1, 64).reshape(1, 8, 8, 1))
    assert np.isfinite(np.asarray(out)).all()


def test_unknown_names_are_refused_clearly():
    with pytest.raises(ValueError, match="model='vgg' is not known"):
        create_image_model("vgg", num_classes=10, in_channels=3)
    with pytest.raises(ValueError, match="activation='swishy' is not known"):
        create_image_model("cifar_resnet8", num_classes=10, in_channels=3, activation="swishy")
    with pytest.raises(ValueError, match="norm='instance' is not known"):
        create_image_model("cifar_resnet8", num_classes=10, in_channels=3, norm="instance")
