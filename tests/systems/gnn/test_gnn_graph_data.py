"""The GNN system's graphs: the seeded synthetic graphs, the Planetoid and RDF entity loaders (on
tiny files written here), and their clear errors."""

import gzip
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from frugal.scripts.systems.gnn import graph_data

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
