"""Our GNN layers against PyTorch Geometric 2.8.1 (golden outputs in tests/data, no torch needed),
fused against unfused Gather, and the per-stage step lists the profiler relies on."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.gnn import STAGES, make_graph
from frugal.models.gnn_layers import (
    GNN_KINDS,
    GATLayer,
    GCNLayer,
    GGNNLayer,
    GINLayer,
    GNNClassifier,
    RGCNLayer,
    SAGELayer,
    prepare_graph,
)

GOLDEN = dict(np.load(Path(__file__).parent / "data" / "gnn_pyg_golden.npz"))
TOLERANCE = 1e-5


def _set(param, value):
    param[...] = jnp.asarray(value, jnp.float32)


def _golden_graph():
    return make_graph(
        GOLDEN["edge_index"], GOLDEN["x"].shape[0], edge_types=GOLDEN["edge_type"], num_edge_types=3, pad_edges_to=48
    )  # padding on purpose: it must not change any output


def _gcn():
    layer = GCNLayer(5, 4, rngs=nnx.Rngs(0))
    _set(layer.linear.kernel, GOLDEN["gcn/lin.weight"].T)
    _set(layer.bias, GOLDEN["gcn/bias"])
    return layer, True


def _gat(name, concat):
    def build():
        layer = GATLayer(5, 3, heads=2, concat=concat, rngs=nnx.Rngs(0))
        _set(layer.linear.kernel, GOLDEN[f"{name}/lin.weight"].T)
        _set(layer.att_src, GOLDEN[f"{name}/att_src"][0])
        _set(layer.att_dst, GOLDEN[f"{name}/att_dst"][0])
        _set(layer.bias, GOLDEN[f"{name}/bias"])
        return layer, True

    return build


def _sage():
    layer = SAGELayer(5, 4, rngs=nnx.Rngs(0))
    _set(layer.lin_l.kernel, GOLDEN["sage/lin_l.weight"].T)
    _set(layer.lin_l.bias, GOLDEN["sage/lin_l.bias"])
    _set(layer.lin_r.kernel, GOLDEN["sage/lin_r.weight"].T)
    return layer, False


def _gin():
    layer = GINLayer(5, 4, hidden_features=6, rngs=nnx.Rngs(0))
    _set(layer.mlp_in.kernel, GOLDEN["gin/nn.0.weight"].T)
    _set(layer.mlp_in.bias, GOLDEN["gin/nn.0.bias"])
    _set(layer.mlp_out.kernel, GOLDEN["gin/nn.2.weight"].T)
    _set(layer.mlp_out.bias, GOLDEN["gin/nn.2.bias"])
    return layer, False


def _rgcn(name, bases):
    def build():
        layer = RGCNLayer(5, 4, num_relations=3, num_bases=bases, rngs=nnx.Rngs(0))
        if bases is None:
            _set(layer.weight, GOLDEN[f"{name}/weight"])
        else:
            _set(layer.bases, GOLDEN[f"{name}/weight"])
            _set(layer.coefficients, GOLDEN[f"{name}/comp"])
        _set(layer.root, GOLDEN[f"{name}/root"])
        _set(layer.bias, GOLDEN[f"{name}/bias"])
        return layer, False

    return build


def _ggnn():
    layer = GGNNLayer(5, 6, num_steps=2, rngs=nnx.Rngs(0))
    _set(layer.weights, GOLDEN["ggnn/weight"])
    _set(layer.gru.input.kernel, GOLDEN["ggnn/rnn.weight_ih"].T)
    _set(layer.gru.input.bias, GOLDEN["ggnn/rnn.bias_ih"])
    _set(layer.gru.hidden.kernel, GOLDEN["ggnn/rnn.weight_hh"].T)
    _set(layer.gru.hidden.bias, GOLDEN["ggnn/rnn.bias_hh"])
    return layer, False


BUILDERS = {
    "gcn": _gcn,
    "gat": _gat("gat", True),
    "gat_mean": _gat("gat_mean", False),
    "sage": _sage,
    "gin": _gin,
    "rgcn": _rgcn("rgcn", None),
    "rgcn_bases": _rgcn("rgcn_bases", 2),
    "ggnn": _ggnn,
}


_run_both = nnx.jit(lambda layer, graph, x: (layer(graph, x, fused=False), layer(graph, x, fused=True)))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_layer_matches_pyg_fused_and_unfused(name):
    layer, self_loops = BUILDERS[name]()
    graph = _golden_graph()
    if self_loops:
        graph = graph.with_self_loops()
    unfused, fused = _run_both(layer, graph, jnp.asarray(GOLDEN["x"]))
    expected = GOLDEN[f"{name}/out"]
    np.testing.assert_allclose(np.asarray(unfused), expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.asarray(fused), expected, atol=TOLERANCE, rtol=0)


def test_golden_is_not_trivial():
    # Guards the golden file itself: outputs differ per layer and are not all zeros.
    outs = [GOLDEN[f"{n}/out"] for n in ("gcn", "sage", "gin", "rgcn")]
    assert all(np.abs(o).mean() > 1e-2 for o in outs)
    assert not np.allclose(outs[0], outs[1][:, : outs[0].shape[1]])


def _lstm_reference(layer, edge_index, x):
    """Per-vertex python loop over in-neighbours sorted by source id: the plain LSTM definition."""
    params = {
        k: np.asarray(v)
        for k, v in (
            ("wi", layer.lstm_input.kernel[...]),
            ("bi", layer.lstm_input.bias[...]),
            ("wh", layer.lstm_hidden.kernel[...]),
            ("bh", layer.lstm_hidden.bias[...]),
        )
    }
    sig = lambda v: 1 / (1 + np.exp(-v))
    n, f = x.shape
    agg = np.zeros((n, f), np.float32)
    for i in range(n):
        sources = sorted(edge_index[0][edge_index[1] == i])
        h, c = np.zeros(f), np.zeros(f)
        for s in sources:
            gates = x[s] @ params["wi"] + params["bi"] + h @ params["wh"] + params["bh"]
            gi, gf, gg, go = np.split(gates, 4)
            c = sig(gf) * c + sig(gi) * np.tanh(gg)
            h = sig(go) * np.tanh(c)
        agg[i] = h
    return (
        agg @ np.asarray(layer.lin_l.kernel[...])
        + np.asarray(layer.lin_l.bias[...])
        + x @ np.asarray(layer.lin_r.kernel[...])
    )


def test_sage_lstm_matches_per_vertex_loop():
    layer = SAGELayer(5, 4, aggregator="lstm", rngs=nnx.Rngs(3))
    graph = _golden_graph()
    out = nnx.jit(lambda m, g, x: m(g, x))(layer, graph, jnp.asarray(GOLDEN["x"]))
    expected = _lstm_reference(layer, GOLDEN["edge_index"], GOLDEN["x"])
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)
    with pytest.raises(ValueError, match="no fused Gather"):
        layer(graph, jnp.asarray(GOLDEN["x"]), fused=True)


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_every_step_is_a_known_stage_and_the_model_runs(kind):
    model = GNNClassifier(kind, 5, 3, hidden=8, heads=2, num_relations=3, num_bases=2, dropout=0.0, rngs=nnx.Rngs(0))
    layer = model.layers[0]
    for fused in (False, True) if layer.fused_gather else (False,):
        steps = layer.steps(fused)
        assert {s.stage for s in steps} <= set(STAGES)
        assert any(s.stage == "Gather" for s in steps)
        # The fused Gather reads vertex data directly: no Scatter of full feature rows.
        assert ("scatter" in [s.method for s in steps]) == (not fused or kind == "gat")
    graph = prepare_graph(kind, _golden_graph())
    out = nnx.jit(lambda m, g, x: m(g, x, fused=layer.fused_gather))(model, graph, jnp.asarray(GOLDEN["x"]))
    assert out.shape == (12, 3) and bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("kind", ["gat", "gcn", "sage", "rgcn"])
def test_gradients_of_fused_and_unfused_agree(kind):
    model = GNNClassifier(kind, 5, 3, hidden=4, heads=2, num_relations=3, dropout=0.0, rngs=nnx.Rngs(1))
    graph = prepare_graph(kind, _golden_graph())
    x = jnp.asarray(GOLDEN["x"])

    def loss(m, fused):
        return jnp.sum(m(graph, x, fused=fused) ** 2)

    g_unfused, g_fused = nnx.jit(
        lambda m: (nnx.grad(lambda m: loss(m, False))(m), nnx.grad(lambda m: loss(m, True))(m))
    )(model)
    for a, b in zip(jax.tree.leaves(g_unfused), jax.tree.leaves(g_fused)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_fused_model_exports_for_accelerators_without_the_cpu_kernel(platform):
    from jax import export

    model = GNNClassifier("gcn", 5, 3, hidden=8, dropout=0.0, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    graph = prepare_graph("gcn", _golden_graph())
    forward = jax.jit(lambda p, g, x: nnx.merge(graphdef, p)(g, x, fused=True))
    exported = export.export(forward, platforms=[platform])(params, graph, jnp.asarray(GOLDEN["x"]))
    assert "frugal_csr_matmul" not in exported.mlir_module()
