"""Graph construction and validation, the stage primitives, and the clear errors the issue asks for.

The dataset loaders and synthetic graphs of the GNN system are tested in
`tests/systems/gnn/test_gnn_graph_data.py`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.gnn import gather_sum, make_graph, segment_softmax, spmm
from frugal.models.gnn_layers import GCNLayer

# --- make_graph and the stage primitives ---------------------------------------------------------


@pytest.mark.parametrize(
    "edges, nodes, error, match",
    [
        ([[0, 1], [1, 5]], 5, ValueError, r"vertex ids in \[0, 5\].*num_nodes=5.*is #1"),
        ([[0, -1], [1, 2]], 5, ValueError, "num_nodes=5"),
        ([[0, 1], [1, 2]], 0, ValueError, "empty"),
        (np.zeros((2, 0), int), 3, ValueError, "no edges"),
        ([[0, 1, 2]], 3, ValueError, r"shape \(2, num_edges\)"),
        ([[0.0, 1.0], [1.0, 2.0]], 3, TypeError, "integers"),
        ([[0, 1], [1, 2]], 3.0, TypeError, "num_nodes must be an int"),
    ],
)
def test_make_graph_rejects_bad_input(edges, nodes, error, match):
    with pytest.raises(error, match=match):
        make_graph(np.asarray(edges), nodes)


def test_make_graph_rejects_bad_types_and_padding():
    with pytest.raises(ValueError, match="pad_edges_to=1"):
        make_graph([[0, 1], [1, 2]], 3, pad_edges_to=1)
    with pytest.raises(ValueError, match=r"edge_types must lie in \[0, 2\)"):
        make_graph([[0, 1], [1, 2]], 3, edge_types=[0, 2], num_edge_types=2)
    with pytest.raises(ValueError, match=r"edge_types must have shape \(2,\)"):
        make_graph([[0, 1], [1, 2]], 3, edge_types=[0])


def test_feature_node_mismatch_is_a_clear_error():
    graph = make_graph([[0, 1], [1, 2]], 3).with_self_loops()
    layer = GCNLayer(4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="4 rows but the graph has num_nodes=3"):
        layer(graph, jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="5 features per node but the layer expects 4"):
        layer(graph, jnp.ones((3, 5)))
    with pytest.raises(TypeError, match="frugal.models.gnn.Graph"):
        layer(np.array([[0, 1], [1, 2]]), jnp.ones((3, 4)))


def test_graph_is_sorted_padded_and_primitives_match_dense():
    rng = np.random.default_rng(1)
    n, e = 9, 30
    edges = rng.integers(0, n, (2, e))
    graph = make_graph(edges, n, pad_edges_to=40)
    assert graph.num_padded_edges == 40 and graph.num_edges == e
    receivers = np.asarray(graph.receivers)
    assert np.all(np.diff(receivers[:e]) >= 0) and np.all(receivers[e:] == n)
    np.testing.assert_array_equal(np.asarray(graph.in_degrees), np.bincount(edges[1], minlength=n))
    dense = np.zeros((n, n), np.float32)
    np.add.at(dense, (edges[1], edges[0]), 1.0)  # duplicates count twice, as in a multigraph
    h = rng.standard_normal((n, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(spmm(graph, jnp.asarray(h))), dense @ h, atol=1e-5)
    np.testing.assert_allclose(np.asarray(spmm(graph, jnp.asarray(h), layout="bcoo")), dense @ h, atol=1e-5)
    messages = jnp.take(jnp.asarray(h), graph.senders, axis=0)
    np.testing.assert_allclose(np.asarray(gather_sum(graph, messages)), dense @ h, atol=1e-5)
    # Softmax over in-edges: weights of each destination sum to one (zero-in-degree: nothing).
    weights = np.asarray(segment_softmax(graph, jnp.asarray(rng.standard_normal(40), jnp.float32)))
    sums = np.bincount(receivers[:e], weights[:e], minlength=n)
    np.testing.assert_allclose(sums[np.bincount(edges[1], minlength=n) > 0], 1.0, atol=1e-6)
    assert np.all(weights[e:] == 0)


def test_with_self_loops_replaces_existing_loops():
    graph = make_graph([[0, 1, 2, 2], [1, 1, 2, 0]], 3, pad_edges_to=6)
    looped = graph.with_self_loops()
    index = looped.edge_index()
    assert sorted(map(tuple, index.T.tolist())) == [(0, 0), (0, 1), (1, 1), (2, 0), (2, 2)]
    assert looped.num_padded_edges - looped.num_edges == 2  # padding kept


@pytest.mark.parametrize("width", [1, 7, 8, 9])
def test_spmm_with_self_loops_and_odd_widths_matches_dense(width):
    # Vertex 1 carries two loops and vertex 3 one; widths off the 8-column multiple get padded.
    edges = np.array([[0, 1, 1, 2, 3, 3, 4, 1], [1, 1, 1, 0, 3, 4, 2, 4]])
    n = 5
    graph = make_graph(edges, n, pad_edges_to=12)
    assert graph.num_self_loops == 3
    np.testing.assert_array_equal(np.asarray(graph.self_loop_counts), [0, 2, 0, 1, 0])
    loop_free_indptr = np.asarray(graph.loop_free_indptr)
    assert graph.loop_free_senders.shape == graph.senders.shape and loop_free_indptr[-1] == 5
    dense = np.zeros((n, n), np.float32)
    np.add.at(dense, (edges[1], edges[0]), 1.0)
    h = np.random.default_rng(width).standard_normal((n, width)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(spmm(graph, jnp.asarray(h))), dense @ h, atol=1e-5)
    np.testing.assert_allclose(np.asarray(spmm(graph, jnp.asarray(h), layout="bcoo")), dense @ h, atol=1e-5)
    # Weighted products keep the loops inside the sparse matrix; padding weights are ignored.
    weights = np.arange(1, 13, dtype=np.float32)
    weighted = np.zeros((n, n), np.float32)
    order = np.lexsort((edges[0], edges[1]))
    np.add.at(weighted, (edges[1][order], edges[0][order]), weights[:8])
    got = spmm(graph, jnp.asarray(h), jnp.asarray(weights))
    np.testing.assert_allclose(np.asarray(got), weighted @ h, atol=1e-4)
    # Under jit with a 3-D input (GAT's heads), the trailing axes are flattened and restored.
    h3 = jnp.asarray(h).reshape(n, width, 1)
    np.testing.assert_allclose(np.asarray(jax.jit(spmm)(graph, h3))[..., 0], dense @ h, atol=1e-5)
