"""PyTorch Geometric side of the GNN comparison (golden outputs and a timing worker), torch-only.

This module imports nothing from JAX or the rest of the repo, so it runs as a script (not with
`-m`: frugal need not be installed there) in a separate environment that has torch +
torch-geometric (the optional `bench` extra), e.g.

    python3 -m venv /tmp/pyg-venv && /tmp/pyg-venv/bin/pip install torch==2.13.0 torch-geometric
    /tmp/pyg-venv/bin/python scripts/systems/gnn/pyg_worker.py golden tests/data/gnn_pyg_golden.npz
    /tmp/pyg-venv/bin/python scripts/systems/gnn/pyg_worker.py serve REQUEST.npz RESULT.json

`frugal gnn bench` (the driver in frugal.scripts.systems.gnn.pyg_bench) writes each graph and our
weights to an .npz request and starts `serve` in the PyG interpreter (`--pyg-python`,
$FRUGAL_PYG_PYTHON, or the current interpreter when it can import torch_geometric) as a worker
process. It then alternates short rounds of timed calls: ours (fused, unfused Gather), PyG
edge_index, PyG CSR, again and again, so that all four see the same machine load (the load of a
machine can change several-fold within a minute), and reports the median of every call. Without
PyG it still times ours and reports "skipped: install the bench extra".

Golden mode builds one small fixed graph, PyG layers with seeded weights, and stores the inputs,
every parameter (PyG names, PyG layouts) and the outputs in one .npz, so that the JAX tests can
check our layers against PyG without torch.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

GOLDEN_IN, GOLDEN_NODES = 5, 12


def _golden_graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < 40:
        s, d = rng.integers(0, GOLDEN_NODES, 2)
        if s != d:  # no self loops and no duplicates: PyG and we then agree on the loop handling
            pairs.add((int(s), int(d)))
    edge_index = np.array(sorted(pairs), dtype=np.int64).T
    edge_type = rng.integers(0, 3, edge_index.shape[1]).astype(np.int64)
    x = rng.standard_normal((GOLDEN_NODES, GOLDEN_IN)).astype(np.float32)
    return edge_index, edge_type, x


def _golden_layers():
    import torch
    from torch_geometric import nn as gnn

    seq = torch.nn.Sequential(torch.nn.Linear(GOLDEN_IN, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    return {
        "gcn": gnn.GCNConv(GOLDEN_IN, 4),
        "gat": gnn.GATConv(GOLDEN_IN, 3, heads=2),
        "gat_mean": gnn.GATConv(GOLDEN_IN, 3, heads=2, concat=False),
        "sage": gnn.SAGEConv(GOLDEN_IN, 4),
        "gin": gnn.GINConv(seq),
        "rgcn": gnn.RGCNConv(GOLDEN_IN, 4, num_relations=3),
        "rgcn_bases": gnn.RGCNConv(GOLDEN_IN, 4, num_relations=3, num_bases=2),
        "ggnn": gnn.GatedGraphConv(6, num_layers=2),
    }


def write_golden(path: str) -> None:
    import torch

    torch.manual_seed(0)
    edge_index, edge_type, x = _golden_graph()
    arrays = {"edge_index": edge_index, "edge_type": edge_type, "x": x}
    ei, et, xt = torch.from_numpy(edge_index), torch.from_numpy(edge_type), torch.from_numpy(x)
    for name, layer in _golden_layers().items():
        layer.eval()
        with torch.no_grad():
            # Non-zero biases so that the test also checks where the bias is added.
            for pname, p in layer.named_parameters():
                if pname.endswith("bias"):
                    p.copy_(torch.randn_like(p) * 0.1)
                arrays[f"{name}/{pname}"] = p.detach().numpy().copy()
            out = layer(xt, ei, et) if name.startswith("rgcn") else layer(xt, ei)
        arrays[f"{name}/out"] = out.numpy()
    import torch_geometric

    arrays["versions"] = np.array([torch.__version__, torch_geometric.__version__])
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(arrays)} arrays (torch {torch.__version__}, PyG {torch_geometric.__version__})")


# --- timing ---------------------------------------------------------------------------------------


def _build_model(kind: str, weights: dict, in_features: int, hidden: int, classes: int, heads: int):
    """A 2-layer PyG model with our weights loaded (torch layouts: Linear weight is (out, in))."""
    import torch
    from torch_geometric import nn as gnn

    if kind == "gcn":
        layers = [gnn.GCNConv(in_features, hidden, cached=True), gnn.GCNConv(hidden, classes, cached=True)]
    elif kind == "gat":
        layers = [
            gnn.GATConv(in_features, hidden, heads=heads),
            gnn.GATConv(hidden * heads, classes, heads=1, concat=False),
        ]
    elif kind == "sage":
        layers = [gnn.SAGEConv(in_features, hidden), gnn.SAGEConv(hidden, classes)]
    else:
        raise ValueError(f"kind={kind!r}: the PyG comparison covers gcn, gat and sage")
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for pname, p in layer.named_parameters():
                p.copy_(torch.from_numpy(weights[f"{i}/{pname}"]).reshape(p.shape))
            layer.eval()
    activation = torch.nn.functional.elu if kind == "gat" else torch.relu

    def forward(x, adjacency):
        h = activation(layers[0](x, adjacency))
        return layers[1](h, adjacency)

    return layers, forward


def _pyg_case(request_path: str):
    """Builds the PyG model for the one case in a request on both paths: {path: (forward, x, adjacency)}."""
    import torch

    request = dict(np.load(request_path, allow_pickle=False))
    torch.set_num_threads(int(request["threads"]))
    case = str(request["cases"][0])
    prefix = case + "/"
    kind = str(request[prefix + "kind"])
    dims = request[prefix + "dims"].tolist()
    weights = {k[len(prefix + "w/") :]: v for k, v in request.items() if k.startswith(prefix + "w/")}
    x = torch.from_numpy(request[prefix + "x"])
    edge_index = torch.from_numpy(request[prefix + "edge_index"])
    n = x.shape[0]
    # CSR adjacency with rows = destinations (what PyG's SparseTensor/adj_t path expects).
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.shape[1]), (n, n)).coalesce()
    paths = {}
    for path, adjacency in (("edge_index", edge_index), ("csr", adj_t.to_sparse_csr())):
        _, forward = _build_model(kind, weights, *dims)  # one model per path: each keeps its own cache
        paths[path] = (forward, x, adjacency)
    return case, int(request["threads"]), paths, _gcn_parts(kind, x, edge_index, weights, dims)


def _gcn_parts(kind, x, edge_index, weights, dims):
    """GCN's two big pieces in torch alone: the first feature matmul and a CSR SpMM (with self loops)
    at the hidden and the output width, as {name: (fn, a, b)} timed like the paths."""
    import torch

    if kind != "gcn":
        return {}
    n = x.shape[0]
    loops = torch.arange(n).repeat(2, 1)
    looped = torch.cat([edge_index, loops], dim=1)
    csr = torch.sparse_coo_tensor(looped.flip(0), torch.rand(looped.shape[1]), (n, n)).coalesce().to_sparse_csr()
    weight = torch.from_numpy(weights["0/lin.weight"]).T.contiguous()
    hidden, classes = torch.rand(n, dims[1]), torch.rand(n, dims[2])
    return {
        "part_xw": (torch.matmul, x, weight),
        "part_spmm_hidden": (torch.matmul, csr, hidden),
        "part_spmm_out": (torch.matmul, csr, classes),
    }


def serve(request_path: str, result_path: str) -> None:
    """PyG worker for the interleaved benchmark: builds the case, checks each path once, writes the
    outputs and versions, prints "ready", then answers "time PATH CALLS" lines on stdin with a JSON
    list of per-call seconds, until "quit". The driver alternates these rounds with its own, so both
    sides are measured under the same machine load."""
    import torch
    import torch_geometric

    case, threads, paths, parts = _pyg_case(request_path)
    meta = {
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "threads": threads,
        "case": case,
        "errors": {},
        "paths": [],
        "parts": sorted(parts),
    }
    with torch.inference_mode():
        for path, (forward, x, adjacency) in list(paths.items()):
            try:
                out = forward(x, adjacency).numpy()  # also fills the cached normalization (cached=True)
            except Exception as err:  # a path PyG does not support for this layer on this build
                meta["errors"][path] = f"{type(err).__name__}: {err}"[:300]
                del paths[path]
                continue
            np.save(f"{result_path}.{path}.npy", out)
            meta["paths"].append(path)
        with open(result_path, "w") as f:
            json.dump(meta, f)
        print("ready", flush=True)
        timed = {**paths, **parts}
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            forward, x, adjacency = timed[words[1]]
            times = []
            for _ in range(int(words[2])):
                start = time.perf_counter()
                forward(x, adjacency)
                times.append(time.perf_counter() - start)
            print(json.dumps(times), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "golden":
        write_golden(argv[1])
        return 0
    if len(argv) >= 3 and argv[0] == "serve":
        serve(argv[1], argv[2])
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
