"""trace_workload: shapes, MAC counts, bit widths, control flow, attention recognition."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from frugal.accel import paper_workloads
from frugal.accel.workload import GemmOp, Workload, bits_from_plan, conv_layer, linear_layer, trace_workload
from frugal.models.resnet import resnet18


def _hand_count_resnet18_macs(image=224, classes=1000):
    """ResNet-18 MACs counted by hand: sum over convs of out_h*out_w*out_c*k*k*in_c, plus the head."""
    macs = 0
    hw = image // 2
    macs += hw * hw * 64 * 7 * 7 * 3  # stem conv 7x7/2
    hw //= 2  # max-pool
    cin = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if (block == 0 and stage > 0) else 1
            out = hw // stride
            macs += out * out * width * 9 * cin  # conv1 3x3
            macs += out * out * width * 9 * width  # conv2 3x3
            if stride != 1 or cin != width:
                macs += out * out * width * cin  # 1x1 projection shortcut
            cin, hw = width, out
    return macs + 512 * classes


@pytest.fixture(scope="module")
def traced_resnet18():
    graphdef, state = nnx.split(nnx.eval_shape(lambda: resnet18(rngs=nnx.Rngs(0))))

    def apply(params, x):
        model = nnx.merge(graphdef, params)
        model.eval()
        return model(x)

    return trace_workload(apply, state, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32), param_argnums=(0,))


def test_resnet18_trace_equals_hand_count(traced_resnet18):
    w = traced_resnet18
    assert w.total_macs == 2 * _hand_count_resnet18_macs() == 2 * 1_814_073_344
    assert len(w.gemms) == 21 and sum(g.kind == "conv" for g in w.gemms) == 20
    assert all(g.weight_is_param for g in w.gemms)
    # the traced layers are the ANT benchmark's ResNet-18 layer list, in the same order
    hand = paper_workloads.resnet18().with_batch(2)
    assert [(g.m, g.n, g.k) for g in w.gemms] == [(g.m, g.n, g.k) for g in hand.gemms]


def test_quantized_layers_carry_bit_widths(traced_resnet18):
    # integer operands: widths from the dtypes
    def int_matmul(x, w):
        return jax.lax.dot_general(x, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)

    w = trace_workload(int_matmul, jnp.zeros((4, 16), jnp.int8), jnp.zeros((16, 8), jnp.int4), param_argnums=(1,))
    assert (w.gemms[0].a_bits, w.gemms[0].w_bits) == (8, 4)

    # a quantization plan's per-layer formats (ANT4-8: first and last 8-bit, the rest 4-bit)
    class _T:
        def __init__(self, bits):
            self.ntype = type("N", (), {"bits": bits})()

    class _L:
        def __init__(self, a, wt):
            self.act, self.weight = _T(a), _T(wt)

    plan = type("Plan", (), {"layers": [_L(8, 8)] + [_L(4, 4)] * 19 + [_L(8, 8)]})()
    quant = traced_resnet18.with_bits(bits_from_plan(plan))
    assert [g.w_bits for g in quant.gemms] == [8] + [4] * 19 + [8]
    assert quant.total_macs == traced_resnet18.total_macs
    with pytest.raises(ValueError, match="entries"):
        traced_resnet18.with_bits([4, 4])


def test_dot_general_batch_dims_and_conv_groups():
    q = jnp.zeros((2, 10, 3, 4))
    w = trace_workload(lambda a, b: jnp.einsum("bqhd,bkhd->bhqk", a, b), q, q)
    g = w.gemms[0]
    assert (g.m, g.n, g.k, g.count) == (10, 10, 4, 6) and not g.weight_is_param
    x = jnp.zeros((1, 8, 8, 6))
    kern = jnp.zeros((3, 3, 2, 12))  # HWIO, 3 groups of 2 input channels
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3
    )
    c = trace_workload(conv, x, kern, param_argnums=(1,)).gemms[0]
    assert (c.m, c.n, c.k, c.count) == (64, 4, 18, 3)
    assert c.macs == 8 * 8 * 12 * 3 * 3 * 2


def test_scan_multiplies_and_cond_takes_the_larger_branch():
    W = jnp.ones((8, 8))

    def rnn(x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ W), None), x, None, length=5)[0]

    w = trace_workload(rnn, jnp.zeros((2, 8)))
    assert w.total_macs == 5 * 2 * 8 * 8 and w.transcendental == 5 * 16

    def branchy(p, x):
        return jax.lax.cond(p, lambda x: x @ jnp.ones((8, 64)) @ jnp.ones((64, 8)), lambda x: x, x)

    assert trace_workload(branchy, True, jnp.zeros((2, 8))).total_macs == 2 * 8 * 64 * 2


def test_hand_layers_and_validation():
    c = conv_layer("c", in_channels=64, out_channels=128, kernel=3, out_hw=(28, 28), in_hw=(56, 56), batch=2, bits=4)
    assert c.macs == 2 * 28 * 28 * 128 * 9 * 64 and c.a_elems == 2 * 56 * 56 * 64
    wl = Workload(gemms=(c, linear_layer("f", rows=2, in_features=10, out_features=3)))
    assert wl.with_batch(3).total_macs == 3 * wl.total_macs
    with pytest.raises(ValueError, match="m="):
        GemmOp(name="x", kind="dot", m=0, n=1, k=1)
    with pytest.raises(ValueError, match="kind"):
        GemmOp(name="x", kind="matmul", m=1, n=1, k=1)
    with pytest.raises(TypeError, match="callable"):
        trace_workload(3, jnp.zeros(2))
    with pytest.raises(ValueError, match="param_argnums"):
        trace_workload(lambda x: x, jnp.zeros(2), param_argnums=(3,))


def test_hybrid_attention_calls_found_by_name_however_called():
    """Attention is recognised from the name its call leaves in the jaxpr: through a local alias,
    under an outer jit, inside a scan over layers, 2-D and dilated, and nothing is patched."""
    from frugal.transforms import attention as module

    attend = module.hybrid_attention  # a local alias: the old module patching missed these
    pattern = module.AttentionPattern(window=64, global_tokens=(0,))
    W = jnp.ones((16, 16))

    def layer(x):
        q = x @ W
        return attend(q, q, q, pattern, impl="banded")

    w = trace_workload(jax.jit(layer), jnp.zeros((2, 256, 4, 16)))
    assert len(w.attention) == 1 and len(w.gemms) == 1
    a = w.attention[0]
    assert (a.seq_len, a.window, a.heads, a.head_dim, a.num_globals, a.batch) == (256, 65, 4, 16, 1, 2)

    grid = module.AttentionPattern(window=(2, 2), grid=(4, 4), global_tokens=(0,), dilation=(1, 2))

    def stacked(x):
        def body(carry, _):
            return module.hybrid_attention(carry, carry, carry, grid, impl="dense"), None

        return jax.lax.scan(body, x, None, length=3)[0]

    w = trace_workload(stacked, jnp.zeros((1, 17, 2, 8)))
    assert len(w.attention) == 1 and w.attention[0].batch == 3  # one op, charged for 3 trips
    assert (w.attention[0].window, w.attention[0].dilation, w.attention[0].num_globals) == (25, 2, 1)
    assert not w.gemms  # the attention's own score/value products are not counted twice


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window=64),
        dict(window=(3, 0), causal=True),
        dict(window=(2, 5), dilation=(1, 2, 4), global_tokens=(0, 7, 9)),
        dict(window=(1, 1), grid=(3, 5), global_tokens=(0,)),
    ],
)
def test_attention_call_name_round_trip(kwargs):
    from frugal.accel.workload import parse_attention_call_name
    from frugal.transforms.attention import AttentionPattern, attention_call_name

    pattern = AttentionPattern(**kwargs)
    parsed = parse_attention_call_name(attention_call_name(pattern))
    dilation = pattern.dilation if isinstance(pattern.dilation, tuple) else (pattern.dilation,)
    assert parsed == {
        "window": pattern.window,
        "dilation": dilation,
        "num_globals": len(pattern.global_tokens),
        "grid": pattern.grid,
        "causal": pattern.causal,
    }
    assert parse_attention_call_name("hybrid_attention") is None
    assert parse_attention_call_name(attention_call_name(pattern) + "_x") is None
