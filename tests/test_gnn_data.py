"""Graph construction and validation, the dataset loaders (on tiny files written here), the
synthetic graphs, and the clear errors the issue asks for."""

import gzip
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from flax import nnx

from frugal.models.gnn import gather_sum, make_graph, segment_softmax, spmm
from frugal.models.gnn_layers import GCNLayer
from frugal.scripts import graph_data

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


# --- synthetic graphs ---------------------------------------------------------------------------


def test_synthetic_citation_graph_matches_sizes_and_has_structure():
    data = graph_data.synthetic_graph("cora", seed=3)
    n, e, f, c, _ = graph_data.DATASET_SIZES["cora"]
    assert (data.num_nodes, data.num_edges, data.x.shape[1], data.num_classes) == (n, 2 * e, f, c)
    src, dst = data.edge_index
    assert not np.any(src == dst)
    assert len({(a, b) for a, b in zip(src, dst)}) == data.num_edges  # no duplicates
    assert {(a, b) for a, b in zip(src, dst)} == {(b, a) for a, b in zip(src, dst)}  # undirected
    degrees = np.bincount(dst, minlength=n)
    assert degrees.max() > 15 * degrees.mean()  # heavy tail (power law), not Erdos-Renyi
    info = data.describe()
    assert info["edge_homophily"] > 0.7 and set(np.unique(data.y)) == set(range(c))
    assert (data.train_mask.sum(), data.val_mask.sum(), data.test_mask.sum()) == (20 * c, 500, 1000)
    assert not np.any(data.train_mask & data.test_mask)
    again = graph_data.synthetic_graph("cora", seed=3)
    np.testing.assert_array_equal(again.edge_index, data.edge_index)
    assert not np.array_equal(graph_data.synthetic_graph("cora", seed=4).edge_index, data.edge_index)


def test_synthetic_entity_graph_has_relations_and_inverses():
    data = graph_data.synthetic_graph("aifb", scale=0.1)
    assert data.num_relations == 2 * graph_data.DATASET_SIZES["aifb"][4]
    half = data.num_edges // 2
    np.testing.assert_array_equal(data.edge_index[:, :half], data.edge_index[::-1, half:])
    np.testing.assert_array_equal(data.edge_type[:half] + data.num_relations // 2, data.edge_type[half:])
    graph = data.to_graph()
    assert graph.num_edge_types == data.num_relations


def test_unknown_dataset_and_bad_scale():
    with pytest.raises(ValueError, match="not known"):
        graph_data.synthetic_graph("reddit")
    with pytest.raises(ValueError, match="scale"):
        graph_data.synthetic_graph("cora", scale=2.0)


# --- Planetoid raw files ------------------------------------------------------------------------


def _write_planetoid(root, name="cora"):
    rng = np.random.default_rng(0)
    n, f, c = 10, 4, 3
    x_all = rng.random((n, f)).astype(np.float32)
    labels = np.eye(c)[rng.integers(0, c, n)]
    test_index = np.array([9, 7, 8])  # unsorted on purpose, as in the real files
    train_n, allx_n = 3, 7
    files = {
        "x": sp.csr_matrix(x_all[:train_n]),
        "y": labels[:train_n],
        "allx": sp.csr_matrix(x_all[:allx_n]),
        "ally": labels[:allx_n],
        "tx": sp.csr_matrix(x_all[test_index]),
        "ty": labels[test_index],
        "graph": {0: [1, 2], 1: [0], 2: [0, 9], 3: [4], 9: [2, 2]},
    }
    for key, value in files.items():
        with open(root / f"ind.{name}.{key}", "wb") as fh:
            pickle.dump(value, fh)
    (root / f"ind.{name}.test.index").write_text("\n".join(map(str, test_index)))
    return x_all, labels.argmax(1)


def test_planetoid_loader_reads_raw_files(tmp_path):
    x_all, y_all = _write_planetoid(tmp_path)
    data = graph_data.load_planetoid(tmp_path, "Cora")
    np.testing.assert_allclose(data.x, x_all)  # test rows land at their test.index positions
    np.testing.assert_array_equal(data.y, y_all)
    assert data.train_mask[:3].all() and data.train_mask.sum() == 3
    assert data.test_mask[[7, 8, 9]].all() and data.test_mask.sum() == 3
    pairs = set(map(tuple, data.edge_index.T.tolist()))
    assert pairs == {(0, 1), (1, 0), (0, 2), (2, 0), (2, 9), (9, 2), (3, 4), (4, 3)}


def test_planetoid_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        graph_data.load_planetoid(tmp_path / "nowhere", "cora")
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.x is missing"):
        graph_data.load_planetoid(tmp_path, "cora")
    _write_planetoid(tmp_path)
    (tmp_path / "ind.cora.graph").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"ind\.cora\.graph could not be read"):
        graph_data.load_planetoid(tmp_path, "cora")
    with pytest.raises(ValueError, match="not known"):
        graph_data.load_planetoid(tmp_path, "aifb")


# --- RDF entity graphs --------------------------------------------------------------------------

NT = """<http://e/a> <http://p/knows> <http://e/b> .
<http://e/b> <http://p/knows> <http://e/c> .
<http://e/a> <http://p/name> "Anna \\"A\\""@en .
# a comment
<http://e/c> <http://p/age> "42"^^<http://www.w3.org/2001/XMLSchema#int> .
"""


def _write_entities(root, gz=True):
    data = NT.encode()
    if gz:
        (root / "aifb_stripped.nt.gz").write_bytes(gzip.compress(data))
    else:
        (root / "aifb_stripped.nt").write_bytes(data)
    header = "id\tperson\tlabel_affiliation\n"
    (root / "trainingSet.tsv").write_text(header + "1\thttp://e/a\tgroupX\n2\thttp://e/b\tgroupY\n")
    (root / "testSet.tsv").write_text(header + "3\thttp://e/c\tgroupX\n")


def test_entities_loader_parses_ntriples(tmp_path):
    _write_entities(tmp_path)
    data = graph_data.load_entities(tmp_path, "AIFB")
    assert data.num_nodes == 5  # a, b, c and two literals
    assert data.num_relations == 6  # 3 predicates and their inverses
    assert data.num_edges == 8
    half = data.num_edges // 2
    np.testing.assert_array_equal(data.edge_index[:, :half], data.edge_index[::-1, half:])
    assert data.train_mask.sum() == 2 and data.test_mask.sum() == 1 and data.num_classes == 2
    labeled = data.y[data.train_mask | data.test_mask]
    assert sorted(labeled.tolist()) == [0, 0, 1]
    data.to_graph()


def test_entities_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="aifb_stripped"):
        graph_data.load_entities(tmp_path, "aifb")
    _write_entities(tmp_path, gz=False)
    (tmp_path / "aifb_stripped.nt").write_text(NT + "<http://e/a> broken\n")
    with pytest.raises(ValueError, match=r"aifb_stripped\.nt:6: not an N-Triples statement"):
        graph_data.load_entities(tmp_path, "aifb")
    (tmp_path / "aifb_stripped.nt").write_text(NT)
    (tmp_path / "testSet.tsv").write_text("id\tperson\n")
    with pytest.raises(ValueError, match="label_affiliation"):
        graph_data.load_entities(tmp_path, "aifb")
