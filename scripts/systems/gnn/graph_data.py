"""Graph datasets for the GNN experiments: real files at a user path, or seeded synthetic graphs.

- `load_planetoid(root, name)`: the Planetoid citation graphs (Cora, Citeseer, PubMed) from the
  original raw files `ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}` (the format PyG's
  `Planetoid` reads; the files are Python pickles, so load only copies you trust).
- `load_entities(root, name)`: the RDF entity graphs (AIFB, MUTAG, BGS) from
  `<name>_stripped.nt[.gz]` plus `trainingSet.tsv` / `testSet.tsv`, parsed without rdflib.
- `synthetic_graph(name, seed)`: a graph with the named dataset's vertex, edge, feature, class
  (and relation) counts. Degrees follow a power law (Chung-Lu weights from a Pareto law, the
  heavy tail RMAT/Kronecker generators give) and edges prefer vertices of the same class
  (a degree-corrected stochastic block model), so labels correlate with structure and a GNN has
  something to learn. Bag-of-words features are drawn from per-class topics, as in Cora.

Nothing downloads; missing or malformed files raise FileNotFoundError/ValueError naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import re
from pathlib import Path

import numpy as np

# name -> (vertices, edges as the paper counts them, features, classes, relations or 0)
DATASET_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "cora": (2708, 5429, 1433, 7, 0),
    "citeseer": (3327, 4732, 3703, 6, 0),
    "pubmed": (19717, 44338, 500, 3, 0),
    "aifb": (8285, 29043, 16, 4, 45),
    "mutag": (23644, 74227, 16, 2, 23),
    "bgs": (333845, 916199, 16, 2, 103),
}
CITATION = ("cora", "citeseer", "pubmed")
ENTITIES = ("aifb", "mutag", "bgs")
# Entity datasets: (column holding the entity URI, column holding its label) in the TSV files.
_ENTITY_COLUMNS = {
    "aifb": ("person", "label_affiliation"),
    "mutag": ("bond", "label_mutagenic"),
    "bgs": ("rock", "label_lithogenesis"),
}


@dataclasses.dataclass(frozen=True)
class GraphDataset:
    """Vertex classification data. edge_index is (2, E) int64, sources first (PyG convention)."""

    name: str
    x: np.ndarray  # (N, F) float32
    y: np.ndarray  # (N,) int64 labels
    edge_index: np.ndarray  # (2, E) int64
    train_mask: np.ndarray  # (N,) bool
    val_mask: np.ndarray
    test_mask: np.ndarray
    num_classes: int
    edge_type: np.ndarray | None = None  # (E,) int64 relation ids (entity graphs)
    num_relations: int = 1
    source: str = "synthetic"

    def __post_init__(self):
        n = self.x.shape[0]
        if self.x.ndim != 2 or n == 0:
            raise ValueError(f"{self.name}: x must be a non-empty (num_nodes, features) matrix, got {self.x.shape}")
        for field in ("y", "train_mask", "val_mask", "test_mask"):
            if getattr(self, field).shape != (n,):
                raise ValueError(
                    f"{self.name}: {field} must have shape ({n},) to match x, got {getattr(self, field).shape}"
                )
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"{self.name}: edge_index must be (2, E), got {self.edge_index.shape}")
        if self.edge_index.size and (self.edge_index.min() < 0 or self.edge_index.max() >= n):
            raise ValueError(f"{self.name}: edge_index refers to vertices outside [0, {n})")

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to_graph(self, *, pad_edges_to: int | None = None):
        """The `frugal.models.gnn.Graph` for this dataset (sorted, validated, optionally padded)."""
        from frugal.models.gnn import make_graph

        return make_graph(
            self.edge_index,
            self.num_nodes,
            edge_types=self.edge_type,
            num_edge_types=self.num_relations if self.edge_type is not None else None,
            pad_edges_to=pad_edges_to,
        )

    def describe(self) -> dict:
        degrees = np.bincount(self.edge_index[1], minlength=self.num_nodes)
        same = self.y[self.edge_index[0]] == self.y[self.edge_index[1]]
        return {
            "name": self.name,
            "source": self.source,
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "features": int(self.x.shape[1]),
            "classes": self.num_classes,
            "relations": self.num_relations,
            "max_in_degree": int(degrees.max()),
            "mean_in_degree": float(degrees.mean()),
            "edge_homophily": float(same.mean()) if same.size else float("nan"),
            "train": int(self.train_mask.sum()),
            "val": int(self.val_mask.sum()),
            "test": int(self.test_mask.sum()),
        }


def _check_name(name: str, allowed) -> str:
    key = str(name).lower()
    if key not in allowed:
        raise ValueError(f"dataset name={name!r} is not known; use one of {list(allowed)}")
    return key


# --- synthetic graphs -----------------------------------------------------------------------------


def _power_law_weights(rng, n, exponent=2.5):
    """Chung-Lu weights: Pareto tail with P(degree > d) ~ d^-(exponent-1), capped to stay simple."""
    weights = (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))
    return np.minimum(weights, n**0.5 * 3)


def _sample_edges(rng, y, weights, num_classes, count, homophily, directed):
    """Draws `count` distinct edges (no self loops): source ~ weight, destination ~ weight within the
    source's class with probability `homophily`, else over all vertices."""
    n = y.shape[0]
    p_all = weights / weights.sum()
    members = [np.flatnonzero(y == c) for c in range(num_classes)]
    p_class = [weights[m] / weights[m].sum() for m in members]
    found = np.zeros((0, 2), np.int64)
    for _ in range(20):
        need = int((count - len(found)) * 1.3) + 16
        src = rng.choice(n, need, p=p_all)
        dst = rng.choice(n, need, p=p_all)
        same = rng.random(need) < homophily
        for c in range(num_classes):
            pick = same & (y[src] == c)
            if pick.any() and len(members[c]) > 1:
                dst[pick] = members[c][rng.choice(len(members[c]), int(pick.sum()), p=p_class[c])]
        pairs = np.stack([src, dst], 1)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if not directed:
            pairs = np.sort(pairs, axis=1)
        found = np.unique(np.concatenate([found, pairs]), axis=0)
        if len(found) >= count:
            break
    keep = rng.permutation(len(found))[:count]
    return found[np.sort(keep)]


def _bag_of_words(rng, y, num_classes, features, words_per_node=18, topic_share=0.3):
    """Binary word features: each vertex draws words, a share of them from its class's topic."""
    n = y.shape[0]
    topic_size = max(features // num_classes, 1)
    topics = np.stack([rng.choice(features, topic_size, replace=False) for _ in range(num_classes)])
    counts = rng.poisson(words_per_node - 1, n) + 1
    rows = np.repeat(np.arange(n), counts)
    from_topic = rng.random(rows.size) < topic_share
    words = rng.integers(0, features, rows.size)
    words[from_topic] = topics[y[rows[from_topic]], rng.integers(0, topic_size, int(from_topic.sum()))]
    x = np.zeros((n, features), np.float32)
    x[rows, words] = 1.0
    return x


def _planetoid_split(rng, y, num_classes, per_class=20, val=500, test=1000):
    n = y.shape[0]
    train = np.zeros(n, bool)
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        train[rng.choice(members, min(per_class, len(members)), replace=False)] = True
    rest = rng.permutation(np.flatnonzero(~train))
    val_mask, test_mask = np.zeros(n, bool), np.zeros(n, bool)
    val_mask[rest[:val]] = True
    test_mask[rest[val : val + test]] = True
    return train, val_mask, test_mask


def synthetic_graph(
    name: str = "cora",
    *,
    seed: int = 0,
    scale: float = 1.0,
    homophily: float | None = None,
    feature_dim: int | None = None,
) -> GraphDataset:
    """A seeded graph with the sizes of `name` (see DATASET_SIZES), optionally scaled down.

    Citation graphs are undirected (each edge stored both ways, as in PyG's Planetoid); entity
    graphs are directed with `relations` edge types plus their inverses (2x edges and types, as
    PyG's Entities). `scale` multiplies vertex and edge counts (for quick runs and tests).
    """
    key = _check_name(name, DATASET_SIZES)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    n, e, f, c, r = DATASET_SIZES[key]
    n, e = max(int(n * scale), 4 * c), max(int(e * scale), 4 * c)
    f = feature_dim or f
    homophily = (0.8 if key in CITATION else 0.7) if homophily is None else homophily
    if not 0 <= homophily <= 1:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    rng = np.random.default_rng(seed)
    y = rng.choice(c, n, p=rng.dirichlet(np.full(c, 4.0)))
    weights = _power_law_weights(rng, n)
    x = _bag_of_words(rng, y, c, f, words_per_node=min(18, max(f // 4, 2)))
    if key in CITATION:
        pairs = _sample_edges(rng, y, weights, c, e, homophily, directed=False)
        edge_index = np.concatenate([pairs.T, pairs.T[::-1]], axis=1)
        train, val, test = _planetoid_split(rng, y, c, val=min(500, n // 5), test=min(1000, n // 2))
        return GraphDataset(
            key,
            x,
            y.astype(np.int64),
            edge_index.astype(np.int64),
            train,
            val,
            test,
            c,
            source=f"synthetic(seed={seed}, scale={scale})",
        )
    pairs = _sample_edges(rng, y, weights, c, e, homophily, directed=True)
    # Relation ids: class-pair dependent with noise, so relations carry signal too.
    relation = (y[pairs[:, 0]] * c + y[pairs[:, 1]] + rng.integers(0, r, len(pairs))) % r
    edge_index = np.concatenate([pairs.T, pairs.T[::-1]], axis=1)
    edge_type = np.concatenate([relation, relation + r])
    labeled = rng.random(n) < 0.5
    train = labeled & (rng.random(n) < 0.8)
    test = labeled & ~train
    return GraphDataset(
        key,
        x,
        y.astype(np.int64),
        edge_index.astype(np.int64),
        train,
        np.zeros(n, bool),
        test,
        c,
        edge_type=edge_type.astype(np.int64),
        num_relations=2 * r,
        source=f"synthetic(seed={seed}, scale={scale})",
    )


# --- Planetoid raw files --------------------------------------------------------------------------


def _read_pickle(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"Planetoid file {path} is missing (expected the raw ind.<name>.* files)")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as err:
        raise ValueError(f"Planetoid file {path} could not be read: {type(err).__name__}: {err}") from err


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, dtype=np.float32)


def load_planetoid(root: str | Path, name: str) -> GraphDataset:
    """Reads Cora/Citeseer/PubMed from the original raw files in `root` (or `root/<Name>/raw`).

    Follows PyG's reader: features and labels of allx/tx are stacked, the test rows reordered by
    test.index, Citeseer's missing test vertices filled with zeros; train = the first len(y)
    vertices, val = the next 500, test = test.index.
    """
    key = _check_name(name, CITATION)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Planetoid root {root} is not a directory")
    for candidate in (root, root / key, root / key.capitalize() / "raw", root / name / "raw", root / "raw"):
        if (candidate / f"ind.{key}.x").is_file():
            root = candidate
            break
    parts = {p: _read_pickle(root / f"ind.{key}.{p}") for p in ("x", "tx", "allx", "y", "ty", "ally", "graph")}
    index_path = root / f"ind.{key}.test.index"
    if not index_path.is_file():
        raise FileNotFoundError(f"Planetoid file {index_path} is missing")
    try:
        test_index = np.array([int(line) for line in index_path.read_text().split()], np.int64)
    except ValueError as err:
        raise ValueError(f"{index_path} must hold one integer per line: {err}") from err
    tx, ty, allx, ally = (_dense(parts[p]) for p in ("tx", "ty", "allx", "ally"))
    if tx.shape[0] != test_index.size or ty.shape[0] != test_index.size:
        raise ValueError(f"{key}: tx/ty have {tx.shape[0]}/{ty.shape[0]} rows but test.index has {test_index.size}")
    sorted_test = np.sort(test_index)
    if key == "citeseer":  # some test vertices are isolated and absent from tx: pad with zeros
        span = sorted_test[-1] - sorted_test[0] + 1
        tx_full, ty_full = np.zeros((span, tx.shape[1]), np.float32), np.zeros((span, ty.shape[1]), np.float32)
        tx_full[sorted_test - sorted_test[0]], ty_full[sorted_test - sorted_test[0]] = tx, ty
        tx, ty = tx_full, ty_full
    x, labels = np.concatenate([allx, tx]), np.concatenate([ally, ty])
    x[test_index], labels[test_index] = x[sorted_test], labels[sorted_test]
    y = labels.argmax(1).astype(np.int64)
    n = x.shape[0]
    graph = parts["graph"]
    if not isinstance(graph, dict):
        raise ValueError(f"{key}: ind.{key}.graph must be a dict of adjacency lists, got {type(graph).__name__}")
    rows = [(int(s), int(d)) for s, targets in graph.items() for d in targets]
    edges = np.array(rows, np.int64).reshape(-1, 2)
    edges = edges[(edges < n).all(1) & (edges[:, 0] != edges[:, 1])]
    edges = np.unique(np.concatenate([edges, edges[:, ::-1]]), axis=0)
    train, val, test = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    num_train = _dense(parts["y"]).shape[0]
    train[:num_train] = True
    val[num_train : num_train + 500] = True
    test[sorted_test] = True
    return GraphDataset(key, x, y, edges.T.copy(), train, val, test, int(labels.shape[1]), source=str(root))


# --- RDF entity graphs (N-Triples) ----------------------------------------------------------------

_TERM = re.compile(r'\s*(<[^>]*>|_:\S+|"(?:[^"\\]|\\.)*"(?:@[\w-]+|\^\^<[^>]*>)?)')


def _parse_triple(line: str, path: Path, number: int):
    terms, pos = [], 0
    for _ in range(3):
        match = _TERM.match(line, pos)
        if not match:
            raise ValueError(f"{path}:{number}: not an N-Triples statement: {line[:120]!r}")
        terms.append(match.group(1))
        pos = match.end()
    if not line[pos:].strip().startswith("."):
        raise ValueError(f"{path}:{number}: statement must end with '.': {line[:120]!r}")
    return terms


def _read_tsv(path: Path, columns: tuple[str, str]) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"entity label file {path} is missing")
    lines = path.read_text().splitlines()
    header = lines[0].split("\t") if lines else []
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: header must contain columns {list(columns)}; missing {missing}")
    a, b = header.index(columns[0]), header.index(columns[1])
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    return [(f"<{r[a].strip('<>')}>", r[b]) for r in rows]


def load_entities(root: str | Path, name: str) -> GraphDataset:
    """Reads AIFB/MUTAG/BGS: `<name>_stripped.nt[.gz]`, `trainingSet.tsv`, `testSet.tsv` in `root`.

    Vertices are all subjects and objects (literals included, as PyG's Entities); each triple
    gives an edge s -> o of relation p and an inverse o -> s of relation p + R. The graphs are
    featureless, so x is the one-hot identity's stand-in: a seeded random 16-dim embedding.
    """
    key = _check_name(name, ENTITIES)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"entity root {root} is not a directory")
    path = next((root / f for f in (f"{key}_stripped.nt.gz", f"{key}_stripped.nt") if (root / f).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{root} holds neither {key}_stripped.nt.gz nor {key}_stripped.nt")
    opener = gzip.open if path.suffix == ".gz" else open
    triples = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                triples.append(_parse_triple(line, path, number))
    if not triples:
        raise ValueError(f"{path} holds no triples")
    nodes = sorted({t[0] for t in triples} | {t[2] for t in triples})
    relations = sorted({t[1] for t in triples})
    node_id, rel_id = {v: i for i, v in enumerate(nodes)}, {p: i for i, p in enumerate(relations)}
    src = np.array([node_id[t[0]] for t in triples], np.int64)
    dst = np.array([node_id[t[2]] for t in triples], np.int64)
    rel = np.array([rel_id[t[1]] for t in triples], np.int64)
    r = len(relations)
    edge_index = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])])
    edge_type = np.concatenate([rel, rel + r])
    n = len(nodes)
    y = np.zeros(n, np.int64)
    masks = {}
    label_names: dict[str, int] = {}
    for split, file in (("train", "trainingSet.tsv"), ("test", "testSet.tsv")):
        mask = np.zeros(n, bool)
        for entity, label in _read_tsv(root / file, _ENTITY_COLUMNS[key]):
            if entity not in node_id:
                raise ValueError(f"{root / file}: entity {entity} does not occur in {path.name}")
            y[node_id[entity]] = label_names.setdefault(label, len(label_names))
            mask[node_id[entity]] = True
        masks[split] = mask
    x = np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)
    return GraphDataset(
        key,
        x,
        y,
        edge_index,
        masks["train"],
        np.zeros(n, bool),
        masks["test"],
        max(len(label_names), 2),
        edge_type=edge_type,
        num_relations=2 * r,
        source=str(root),
    )


def load_graph_dataset(name: str, root: str | Path | None = None, *, seed: int = 0, scale: float = 1.0) -> GraphDataset:
    """Real files when `root` is given, else the seeded synthetic stand-in of the same size."""
    key = _check_name(name, DATASET_SIZES)
    if root is None:
        return synthetic_graph(key, seed=seed, scale=scale)
    return load_planetoid(root, key) if key in CITATION else load_entities(root, key)
