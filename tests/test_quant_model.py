"""frugal.transforms.quant.model_quant / mixed_precision: rules, calibration, PTQ, QAT, ANT4-8.

Quantized models are checked against a NumPy fake-quant reference (nearest value of the type's
grid scaled to alpha) applied by hand to the same weights and inputs.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from frugal.transforms.quant.mixed_precision import MixedPrecisionPolicy, mixed_precision_plan
from frugal.transforms.quant.model_quant import (
    QuantAlpha,
    QuantPlan,
    QuantRule,
    apply_plan,
    collect_layer_inputs,
    first_matching_rule,
    packed_weight_bytes,
    ptq,
    select_plan,
    strip_quantization,
)

ANT = ("int", "pot", "flint", "float")


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(12, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 16, rngs=rngs)
        self.fc3 = nnx.Linear(16, 4, rngs=rngs)
        # Non-zero biases: quantized pre-activations exactly at 0 would make relu'(0) ambiguous.
        for fc in (self.fc1, self.fc2, self.fc3):
            fc.bias.set_value(jnp.full(fc.bias[...].shape, 0.05))

    def __call__(self, x):
        return self.fc3(jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(x)))))


class ConvNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.mix = nnx.Einsum("bhwc,cd->bhwd", (8, 6), (6,), rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        # A weightless einsum (like attention's QK^T) must stay in float.
        gram = jnp.einsum("bhwc,bhwd->bcd", h, h)
        return jnp.mean(self.mix(h), axis=(1, 2)) + 1e-3 * jnp.sum(gram, axis=(1, 2))[:, None]


@nnx.jit
def forward(model, x):
    return model(x)


def np_fake_quant(x, tensor, axis=None):
    """Nearest grid value (ties up) of x / alpha on the grid normalized to max 1, times alpha."""
    x = np.asarray(x, np.float64)
    grid = tensor.ntype.grid / tensor.ntype.grid[-1]
    alpha = np.asarray(tensor.alpha, np.float64)
    if axis is not None and alpha.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        alpha = alpha.reshape(shape)
    v = x / alpha
    dist = np.abs(v[..., None] - grid)
    # argmin over the reversed grid picks the larger value on exact ties.
    idx = len(grid) - 1 - np.argmin(dist[..., ::-1], axis=-1)
    return grid[idx] * alpha


def mlp_reference(model, plan, x):
    h = np.asarray(x, np.float64)
    for i, name in enumerate(("fc1", "fc2", "fc3")):
        layer = plan.lookup(name, "dot_general0")
        fc = getattr(model, name)
        w = np.asarray(fc.kernel[...], np.float64)
        if layer is not None:
            w = np_fake_quant(w, layer.weight, axis=-1) if layer.weight else w
            h = np_fake_quant(h, layer.act) if layer.act else h
        h = h @ w + np.asarray(fc.bias[...], np.float64)
        if i < 2:
            h = np.maximum(h, 0)
    return h


@pytest.fixture(scope="module")
def mlp_setup():
    model = MLP(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.laplace(size=(32, 12)).astype(np.float32)) for _ in range(2)]
    return model, batches


def test_rule_matching_first_wins_and_op_names():
    rules = [
        QuantRule(module_path="fc3", weight_bits=8, act_bits=8),
        QuantRule(module_path="fc.*", op_names=("conv_general_dilated",), weight_bits=2),
        QuantRule(module_path="fc.*", weight_bits=4),
    ]
    assert first_matching_rule(rules, "fc3", "dot_general").weight_bits == 8
    assert first_matching_rule(rules, "fc1", "dot_general").weight_bits == 4
    assert first_matching_rule(rules, "fc1", "conv_general_dilated").weight_bits == 2
    assert first_matching_rule(rules, "head", "dot_general") is None


def test_ptq_mlp_matches_numpy_reference(mlp_setup):
    model, batches = mlp_setup
    rules = [
        QuantRule(module_path="fc3", weight_bits=None, act_bits=None),  # keep the last layer float
        QuantRule(module_path="fc.*", weight_kinds=ANT, act_kinds=ANT, alpha_step=0.05),
    ]
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    quantized, plan = ptq(model, rules, batches)
    assert [layer.key for layer in plan.layers] == ["fc1:dot_general0", "fc2:dot_general0"]
    # Signedness from the data: Laplace input to fc1 is signed, post-ReLU input to fc2 is not.
    assert plan.layers[0].act.ntype.signed and not plan.layers[1].act.ntype.signed
    assert all(
        layer.weight.ntype.signed and np.shape(layer.weight.alpha) == (layer_out,)
        for layer, layer_out in zip(plan.layers, (32, 16))
    )
    x = batches[0]
    got = np.asarray(forward(quantized, x))
    np.testing.assert_allclose(got, mlp_reference(model, plan, x), rtol=2e-4, atol=2e-5)
    assert np.abs(got - np.asarray(forward(model, x))).max() > 1e-3  # it did quantize
    # The input model is untouched, and stripping the quantization gives the float model back.
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    np.testing.assert_allclose(
        np.asarray(forward(strip_quantization(quantized), x)), np.asarray(forward(model, x)), rtol=1e-6
    )


def test_conv_and_einsum_quantized_weightless_einsum_left_float():
    model = ConvNet(nnx.Rngs(1))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6, 6, 3)).astype(np.float32))
    rules = [QuantRule(weight_kinds=("int", "flint"), act_kinds=("int", "flint"), alpha_step=0.05)]
    quantized, plan = ptq(model, rules, [x])
    assert sorted(layer.key for layer in plan.layers) == ["conv:conv_general_dilated0", "mix:einsum0"]
    conv, mix = plan.lookup("conv", "conv_general_dilated0"), plan.lookup("mix", "einsum0")
    assert np.shape(conv.weight.alpha) == (8,) and np.shape(mix.weight.alpha) == (6,)
    assert not mix.act.ntype.signed  # post-ReLU input
    # Reference in float64 NumPy-quantized operands through plain lax ops.
    wq = np_fake_quant(model.conv.kernel[...], conv.weight, axis=-1)
    xq = np_fake_quant(x, conv.act)
    h = (
        jax.lax.conv_general_dilated(
            jnp.asarray(xq, jnp.float32),
            jnp.asarray(wq, jnp.float32),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        + model.conv.bias[...]
    )
    h = jax.nn.relu(h)
    gram = jnp.einsum("bhwc,bhwd->bcd", h, h)
    mq = np_fake_quant(model.mix.kernel[...], mix.weight, axis=-1)
    hq = np_fake_quant(h, mix.act)
    y = jnp.einsum("bhwc,cd->bhwd", jnp.asarray(hq, jnp.float32), jnp.asarray(mq, jnp.float32)) + model.mix.bias[...]
    ref = jnp.mean(y, axis=(1, 2)) + 1e-3 * jnp.sum(gram, axis=(1, 2))[:, None]
    np.testing.assert_allclose(np.asarray(forward(quantized, x)), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_selection_follows_the_data():
    class One(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(64, 8, rngs=rngs)

        def __call__(self, x):
            return self.fc(x)

    model = One(nnx.Rngs(2))
    rng = np.random.default_rng(2)
    rule = [QuantRule(weight_kinds=ANT, act_kinds=ANT, alpha_step=0.05)]
    uniform = select_plan(collect_layer_inputs(model, rule, [jnp.asarray(rng.uniform(-1, 1, (256, 64)), jnp.float32)]))
    heavy = select_plan(collect_layer_inputs(model, rule, [jnp.asarray(rng.standard_t(2, (256, 64)), jnp.float32)]))
    assert uniform.layers[0].act.kind == "int"
    assert heavy.layers[0].act.kind != "int"
    mse = heavy.layers[0].act.mse_per_candidate
    assert heavy.layers[0].act.mse <= mse["int"]


def test_qat_trains_weights_and_alphas(mlp_setup):
    model, batches = mlp_setup
    quantized, plan = ptq(
        model, [QuantRule(weight_kinds=("int", "flint"), act_kinds=("int", "flint"), alpha_step=0.05)], batches
    )
    x = batches[0]
    target = jnp.asarray(np.random.default_rng(3).normal(size=(32, 4)).astype(np.float32))
    optimizer = nnx.Optimizer(quantized, optax.adam(3e-3), wrt=nnx.Param)
    alpha0 = np.asarray(quantized.fc2.dot_general0_act_alpha[...])

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss, grads

    loss0, grads = step(quantized, optimizer, x, target)
    alpha_grads = jax.tree.leaves(nnx.state(grads, QuantAlpha))
    assert len(alpha_grads) == 6 and all(np.all(np.isfinite(g)) for g in alpha_grads)
    assert any(np.abs(g).max() > 0 for g in alpha_grads)
    for _ in range(40):
        loss, _ = step(quantized, optimizer, x, target)
    assert float(loss) < 0.7 * float(loss0)
    assert np.abs(np.asarray(quantized.fc2.dot_general0_act_alpha[...]) - alpha0) > 0


def test_mixed_precision_policy_and_overrides(mlp_setup):
    model, batches = mlp_setup
    samples = collect_layer_inputs(model, [QuantRule()], batches)
    result = mixed_precision_plan(samples, MixedPrecisionPolicy(alpha_step=0.05))
    names = {layer.path: (layer.weight.ntype.name, layer.act.ntype.name) for layer in result.plan.layers}
    assert names["fc1"][0] == "int8s" and names["fc3"][0] == "int8s"
    assert names["fc2"][0].endswith("4s") and result.high_precision == ("fc1:dot_general0", "fc3:dot_general0")
    # A budget of one extra layer promotes the remaining one; the ranking is by low-bit MSE.
    extra = mixed_precision_plan(
        samples, MixedPrecisionPolicy(first_layers=0, last_layers=1, extra_high_layers=1, alpha_step=0.05)
    )
    ranked = [k for k, _ in extra.ranked_by_mse]
    mses = [m for _, m in extra.ranked_by_mse]
    assert mses == sorted(mses, reverse=True)
    expected = ["fc3:dot_general0"] + [k for k in ranked if k != "fc3:dot_general0"][:1]
    assert list(extra.high_precision) == expected
    # An override wins over the policy: fc1 stays float, and the policy's "first layer" becomes fc2.
    over = mixed_precision_plan(
        samples,
        MixedPrecisionPolicy(
            alpha_step=0.05, overrides=(QuantRule(module_path="fc1", weight_bits=None, act_bits=None),)
        ),
    )
    assert [layer.path for layer in over.plan.layers] == ["fc2", "fc3"]
    assert all(layer.weight.ntype.name == "int8s" for layer in over.plan.layers)


def test_bad_input(mlp_setup):
    model, batches = mlp_setup
    with pytest.raises(ValueError, match="weight_bits"):
        QuantRule(weight_bits=9)
    with pytest.raises(ValueError, match="act_kinds"):
        QuantRule(act_kinds=("nf4",))
    with pytest.raises(ValueError, match="module_path"):
        QuantRule(module_path="fc[")
    with pytest.raises(ValueError, match="op_names"):
        QuantRule(op_names=("matmul",))
    with pytest.raises(ValueError, match="empty"):
        collect_layer_inputs(model, [QuantRule()], [])
    with pytest.raises(ValueError, match="NaN"):
        collect_layer_inputs(model, [QuantRule()], [batches[0].at[0, 0].set(jnp.nan)])
    with pytest.raises(ValueError, match="no op matched"):
        collect_layer_inputs(model, [QuantRule(module_path="nothing")], batches[:1])
    with pytest.raises(TypeError, match="plan"):
        apply_plan(model, {"fc1": "int4"})
    with pytest.raises(ValueError, match="extra_high_layers"):
        MixedPrecisionPolicy(extra_high_layers=-1)
    with pytest.raises(ValueError, match="module path"):
        samples = collect_layer_inputs(model, [QuantRule(alpha_step=0.25)], batches[:1])
        plan = select_plan(samples)
        moved = QuantPlan(
            tuple(
                type(layer)(re.sub("fc", "gone", layer.path), layer.op_id, layer.op_name, layer.weight, layer.act)
                for layer in plan.layers
            )
        )
        apply_plan(model, moved)


def test_padded_selection_equals_plain_selection():
    from frugal.transforms.quant import select_numeric_type
    from frugal.transforms.quant.model_quant import _select_padded

    rng = np.random.default_rng(4)
    weight = rng.laplace(size=(3, 3, 5, 7)).astype(np.float32)
    act = np.abs(rng.standard_t(3, size=(37, 11))).astype(np.float32)
    for x, axis, signed in ((weight, 3, True), (act, None, False)):
        plain = select_numeric_type(x, 4, ANT, signed=signed, alpha_step=0.05, axis=axis)
        padded = _select_padded(x, 4, ANT, signed, (0.75, 1.5), 0.05, axis)
        assert padded.kind == plain.kind and padded.ntype == plain.ntype
        np.testing.assert_allclose(padded.alpha, plain.alpha, rtol=1e-6)
        for kind in ANT:
            assert padded.mse_per_candidate[kind] == pytest.approx(plain.mse_per_candidate[kind], rel=1e-4)


@pytest.mark.parametrize("impl", ["reference", "pallas"])
def test_packed_ant_kernel_path_equals_fake_quant(mlp_setup, impl):
    """apply_plan(impl=...) runs 4-bit dense layers through jaxlib_ext.ant_matmul on packed codes:
    same outputs as the fake-quant path, the float kernels no longer read, 8-bit layers left fake."""
    model, batches = mlp_setup
    rules = [
        QuantRule(module_path="fc3", weight_bits=8, act_bits=8, alpha_step=0.05),
        QuantRule(module_path="fc.*", weight_kinds=ANT, act_kinds=ANT, alpha_step=0.05),
    ]
    fake, plan = ptq(model, rules, batches)
    packed = apply_plan(model, plan, impl=impl)
    x = batches[1]
    np.testing.assert_allclose(np.asarray(forward(packed, x)), np.asarray(forward(fake, x)), rtol=1e-5, atol=1e-5)

    def kernel_calls(jaxpr):
        for eqn in jaxpr.eqns:
            if str(eqn.params.get("name", "")).startswith("frugal_ant_matmul__"):
                yield eqn
            else:
                for value in eqn.params.values():
                    if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
                        yield from kernel_calls(value.jaxpr)

    calls = list(kernel_calls(jax.make_jaxpr(lambda m, x: m(x))(packed, x).jaxpr))
    assert len(calls) == 2  # fc1 and fc2; fc3 (8-bit) stays fake-quantized
    # The packed layers read their codes, not the float kernel.
    packed.fc1.kernel.set_value(jnp.zeros_like(packed.fc1.kernel[...]))
    np.testing.assert_allclose(np.asarray(forward(packed, x)), np.asarray(forward(fake, x)), rtol=1e-5, atol=1e-5)
    moved = packed_weight_bytes(packed)
    float_bytes = 4 * (12 * 32 + 32 * 16)
    assert moved["layers"] == 2 and moved["float_bytes"] == float_bytes
    assert moved["packed_bytes"] == (6 * 32 + 16 * 16) + 4 * (32 + 16)  # codes + per-column scales
    assert packed_weight_bytes(fake)["layers"] == 0
    with pytest.raises(ValueError, match="impl must be one of"):
        apply_plan(model, plan, impl="cuda")
