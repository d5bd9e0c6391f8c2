"""activation_memory on whole models, the bench nets and the residual reductions (the benchmark driver's
tests are in tests/systems/activation_memory)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax._src.ad_checkpoint import saved_residuals

from frugal.models.bench_nets import BertEncoder, GeluMLP, MishCNN, MobileNetSiLU
from frugal.models.resnet import cifar_resnet8
from frugal.transforms.activation_policy import (
    AUTO_CHOICE,
    PER_ACTIVATION,
    POLICIES,
    ActivationPolicy,
    RecomputedActivation,
    activation_memory,
    activation_summary,
    auto_choice,
    autodiff_residual_count,
    wrap_activation,
)
from frugal.transforms.activations import NestedActivation, get_activation


def _loss_and_state(model, inputs, labels):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits = nnx.merge(graphdef, params, rest, copy=True)(inputs)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        ).mean()

    return loss, params


def _computed_residuals(model, inputs, labels):
    """(count, bytes) of the residuals computed in the forward pass (not parameters)."""
    loss, params = _loss_and_state(model, inputs, labels)
    found = [a for a, where in saved_residuals(loss, params) if a.shape and not where.startswith("from the argument")]
    return len(found), sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in found)


@pytest.fixture(scope="module")
def resnet():
    return cifar_resnet8(num_classes=4, width=8, activation="gelu_tanh", rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32), jnp.asarray([1, 3], jnp.int32)


def test_resnet_policies_swap_activations_on_a_copy_and_keep_gradients(resnet, images):
    original = resnet.blocks[0].activation
    reference_loss, params = _loss_and_state(resnet, *images)
    reference = jax.jit(jax.grad(reference_loss))(params)
    for policy, kind, tol in [
        ("nested", NestedActivation, 1e-5),
        ("recompute", RecomputedActivation, 1e-5),
        ("nested_lowp", NestedActivation, 2e-2),
    ]:
        copy = activation_memory(resnet, policy)
        assert resnet.blocks[0].activation is original and resnet.activation is original  # input unchanged
        assert isinstance(copy.blocks[0].activation, kind) and copy.activation is copy.blocks[2].activation
        loss, copy_params = _loss_and_state(copy, *images)
        value, grads = jax.jit(jax.value_and_grad(loss))(copy_params)
        assert float(value) == pytest.approx(float(jax.jit(reference_loss)(params)), rel=1e-6)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)):
            np.testing.assert_allclose(got, want, atol=tol + 1e-7, rtol=tol)
    assert activation_summary(activation_memory(resnet, "nested")) == {"nested(gelu(approximate=True))": 4}


def test_policies_compose_and_autodiff_restores_the_plain_function(resnet):
    nested = activation_memory(resnet, "nested")
    back = activation_memory(nested, "autodiff")
    assert back.activation is resnet.activation
    lowp = activation_memory(nested, "nested_lowp", derivative_dtype=jnp.float16)
    assert lowp.activation.derivative_dtype == jnp.float16 and lowp.activation.function is resnet.activation


def _auto_kinds(model, regime):
    copy = activation_memory(model, ActivationPolicy("auto", regime=regime, check_elementwise=False))
    return {type(module.activation) for _, module in nnx.iter_modules(copy) if callable(vars(module).get("activation"))}


def test_auto_follows_the_regime_table_and_decides_per_activation_in_split(resnet):
    # Golden counts of plain-autodiff residuals per function (argument and scalar constants left out).
    golden = {"gelu": 3, "gelu_tanh": 4, "mish": 4, "elu": 4, "silu": 2, "softplus": 2}
    for name, count in golden.items():
        assert autodiff_residual_count(get_activation(name)) == count, name
    assert autodiff_residual_count(jax.nn.relu) == 2
    # The rule, independently restated: nested iff >= 4 saved tensors, split regime only.
    for name in golden:
        want = "nested" if golden[name] >= 4 else "recompute"
        assert auto_choice(get_activation(name), "split") == want, name
        assert ActivationPolicy("auto", regime="split").resolve(get_activation(name)) == want
        assert auto_choice(get_activation(name), "jit") == "recompute"
        assert auto_choice(get_activation(name), "eager") == "recompute"
    assert AUTO_CHOICE == {"jit": "recompute", "split": PER_ACTIVATION, "eager": "recompute"}
    with pytest.raises(ValueError, match="per activation"):
        ActivationPolicy("auto", regime="split").resolve()

    rngs = nnx.Rngs(0)
    gelu_erf_model = GeluMLP(num_layers=1, dim=8, hidden=16, activation="gelu", rngs=rngs)
    mish_model = MishCNN(widths=(4,), convs_per_stage=1, rngs=rngs)
    assert _auto_kinds(gelu_erf_model, "split") == {RecomputedActivation}
    assert _auto_kinds(mish_model, "split") == {NestedActivation}
    assert _auto_kinds(resnet, "split") == {NestedActivation}  # gelu_tanh
    for model in (gelu_erf_model, mish_model, resnet):
        assert _auto_kinds(model, "jit") == _auto_kinds(model, "eager") == {RecomputedActivation}


def test_auto_counts_residuals_once_per_function():
    traced = []

    def costly(x):  # plain autodiff saves its factors and partial products (>= 4 tensors)
        traced.append(1)
        return jnp.exp(x) * jnp.sin(x) * jnp.cos(x)

    assert autodiff_residual_count(costly) >= 4
    calls = len(traced)
    assert calls >= 1
    unchecked = ActivationPolicy("auto", regime="split", check_elementwise=False)  # the check would call it
    for _ in range(3):
        assert auto_choice(costly, "split") == "nested"
        assert isinstance(wrap_activation(costly, unchecked), NestedActivation)
    assert len(traced) == calls  # cached: the probe never ran again


def test_nested_keeps_fewer_residuals_on_resnet(resnet, images):
    counts = {
        p: _computed_residuals(activation_memory(resnet, p), *images) for p in ("autodiff", "nested", "recompute")
    }
    assert counts["nested"] == counts["recompute"]
    assert counts["nested"][1] < counts["autodiff"][1]
    # 7 activation calls (stem + 2 per block); gelu_tanh keeps >= 3 more tensors each under plain autodiff.
    assert counts["autodiff"][0] - counts["nested"][0] >= 3 * 7


@pytest.mark.parametrize(
    "build,inputs",
    [
        (lambda r: MishCNN(widths=(8, 16, 16), rngs=r), jnp.ones((2, 8, 8, 3))),
        (lambda r: GeluMLP(num_layers=2, dim=32, hidden=128, rngs=r), jnp.ones((16, 32))),
    ],
)
def test_split_residuals_at_least_1_97x_lower_on_mish_cnn_and_gelu_mlp(build, inputs):
    model = build(nnx.Rngs(0))
    labels = jnp.zeros(inputs.shape[:1], jnp.int32)
    _, autodiff = _computed_residuals(model, inputs, labels)
    _, nested = _computed_residuals(activation_memory(model, "nested"), inputs, labels)
    assert autodiff / nested >= 1.97, (autodiff, nested)


def test_bench_nets_run_and_follow_the_activation_convention():
    rngs = nnx.Rngs(0)
    cases = [
        (
            BertEncoder(num_layers=1, dim=32, heads=4, hidden=64, vocab_size=50, max_len=16, rngs=rngs),
            jnp.zeros((2, 8), jnp.int32),
            (2, 2),
        ),
        (MobileNetSiLU(stages=((8, 1, 1), (16, 1, 2)), stem=8, rngs=rngs), jnp.ones((2, 8, 8, 3)), (2, 10)),
        (MishCNN(widths=(8, 16), rngs=rngs), jnp.ones((2, 8, 8, 3)), (2, 10)),
        (GeluMLP(num_layers=1, dim=16, hidden=32, rngs=rngs), jnp.ones((5, 16)), (5, 10)),
    ]
    for model, x, shape in cases:
        plain = model(x)
        assert plain.shape == shape
        copy = activation_memory(model, "nested")
        np.testing.assert_allclose(copy(x), plain, atol=1e-6)
        assert all(name.startswith("nested(") for name in activation_summary(copy))
    with pytest.raises(ValueError, match="sequence length"):
        cases[0][0](jnp.zeros((1, 17), jnp.int32))


def test_refusals():
    with pytest.raises(ValueError, match="policy="):
        ActivationPolicy("fast")
    with pytest.raises(ValueError, match="regime="):
        ActivationPolicy("auto", regime="pipelined")
    with pytest.raises(TypeError, match="derivative_dtype"):
        ActivationPolicy("nested_lowp", derivative_dtype=jnp.int32)
    with pytest.raises(TypeError, match="nnx.Module"):
        activation_memory(lambda x: x, "nested")
    with pytest.raises(ValueError, match="no module with an `activation`"):
        activation_memory(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), "nested")
    softmax_model = GeluMLP(num_layers=1, dim=8, hidden=8, activation=jax.nn.softmax, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not element-wise"):
        activation_memory(softmax_model, "nested")
    assert set(POLICIES) == {"autodiff", "nested", "recompute", "nested_lowp", "auto"}


def test_saved_residuals_sources_from_public_api():
    """sin saves cos(x) (computed); x * x saves x itself (the argument); a closed-over array is a
    constant; relu's mask is computed; a linear function saves nothing per element."""
    import jax.numpy as jnp

    from frugal.transforms.activation_policy import saved_residuals

    x = jnp.linspace(-1.0, 1.0, 5)
    w = jnp.arange(5.0)
    assert [(a.shape, s) for a, s in saved_residuals(jnp.sin, x)] == [((5,), "computed")]
    assert [s for _, s in saved_residuals(lambda v: v * v, x)] == ["argument"] * len(
        saved_residuals(lambda v: v * v, x)
    )
    assert "constant" in [s for _, s in saved_residuals(lambda v: jnp.sin(v * w), x)]
    assert all(not a.shape for a, _ in saved_residuals(lambda v: 3.0 * v + 1.0, x))
