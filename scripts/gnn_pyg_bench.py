"""PyTorch Geometric side of the GNN comparison: golden outputs and timings, torch-only.

This module imports nothing from JAX or the rest of the repo, so it runs in a separate
environment that has torch + torch-geometric (the optional `bench` extra), e.g.

    python3 -m venv /tmp/pyg-venv && /tmp/pyg-venv/bin/pip install torch==2.13.0 torch-geometric
    /tmp/pyg-venv/bin/python scripts/gnn_pyg_bench.py golden tests/data/gnn_pyg_golden.npz
    /tmp/pyg-venv/bin/python scripts/gnn_pyg_bench.py time REQUEST.npz RESULT.json

`frugal gnn bench` (scripts.commands.gnn_bench) times our model, then writes that graph and our
weights to an .npz request and runs `time` in the PyG interpreter as a subprocess (`--pyg-python`,
$FRUGAL_PYG_PYTHON, or the current interpreter when it can import torch_geometric), one case per
subprocess right after ours so both see similar machine load; it compares outputs and times
side by side. Without PyG it still times ours and reports "skipped: install the bench extra".

Golden mode builds one small fixed graph, PyG layers with seeded weights, and stores the inputs,
every parameter (PyG names, PyG layouts) and the outputs in one .npz, so that the JAX tests can
check our layers against PyG without torch.
"""

from __future__ import annotations

import dataclasses
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

def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _build_model(kind: str, weights: dict, in_features: int, hidden: int, classes: int, heads: int):
    """A 2-layer PyG model with our weights loaded (torch layouts: Linear weight is (out, in))."""
    import torch
    from torch_geometric import nn as gnn

    if kind == "gcn":
        layers = [gnn.GCNConv(in_features, hidden, cached=True), gnn.GCNConv(hidden, classes, cached=True)]
    elif kind == "gat":
        layers = [gnn.GATConv(in_features, hidden, heads=heads), gnn.GATConv(hidden * heads, classes, heads=1,
                                                                            concat=False)]
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


def time_request(request_path: str, result_path: str) -> None:
    """Times PyG on every (graph, model) in the request, on both edge_index and CSR adjacency."""
    import torch
    import torch_geometric

    request = dict(np.load(request_path, allow_pickle=False))
    threads = int(request["threads"])
    torch.set_num_threads(threads)
    repeats = int(request["repeats"])
    results = []
    for case in [str(c) for c in request["cases"]]:
        prefix = case + "/"
        kind = str(request[prefix + "kind"])
        dims = request[prefix + "dims"].tolist()
        weights = {k[len(prefix + "w/"):]: v for k, v in request.items() if k.startswith(prefix + "w/")}
        x = torch.from_numpy(request[prefix + "x"])
        edge_index = torch.from_numpy(request[prefix + "edge_index"])
        n = x.shape[0]
        # CSR adjacency with rows = destinations (what PyG's SparseTensor/adj_t path expects).
        adj_t = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.shape[1]), (n, n)).coalesce()
        adj_t = adj_t.to_sparse_csr()
        row = {"case": case, "kind": kind}
        outputs = {}
        with torch.inference_mode():
            for path, adjacency in (("edge_index", edge_index), ("csr", adj_t)):
                _, forward = _build_model(kind, weights, *dims)
                try:
                    row[f"pyg_{path}_ms"] = _median_ms(lambda: forward(x, adjacency), repeats)
                    outputs[path] = forward(x, adjacency).numpy()
                except Exception as err:  # a path PyG does not support for this layer on this build
                    row[f"pyg_{path}_ms"] = None
                    row[f"pyg_{path}_error"] = f"{type(err).__name__}: {err}"[:300]
        for path, out in outputs.items():
            row[f"pyg_{path}_output_sum"] = float(np.abs(out).sum())
            np.save(f"{result_path}.{case}.{path}.npy", out)
        results.append(row)
    with open(result_path, "w") as f:
        json.dump({"torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
                   "threads": threads, "results": results}, f, indent=2)


# --- JAX side: our timings, the request, the subprocess, the comparison --------------------------
# (imports of jax and the repo stay inside functions, so the PyG environment never needs them)

BENCH_DATASETS = ("cora", "pubmed")
BENCH_MODELS = ("gcn", "gat", "sage")
SKIPPED = "skipped: install the bench extra (torch==2.13.0 + torch-geometric) or pass --pyg-python"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    datasets: tuple[str, ...] = BENCH_DATASETS
    models: tuple[str, ...] = BENCH_MODELS
    hidden: int = 16  # GCN/SAGE hidden width; GAT uses heads x 8
    heads: int = 8
    repeats: int = 30
    threads: int = 2
    pyg_python: str | None = None  # interpreter with torch_geometric; default: this one, or $FRUGAL_PYG_PYTHON
    data_root: str | None = None
    seed: int = 0
    outdir: str | None = "reports/gnn"
    timeout_s: int = 900

    def __post_init__(self):
        bad = [m for m in self.models if m not in BENCH_MODELS]
        if bad or not self.models:
            raise ValueError(f"models {bad or '()'} not allowed; the PyG comparison covers {BENCH_MODELS}")
        if not self.datasets:
            raise ValueError("datasets must name at least one graph")
        if self.repeats < 1 or self.threads < 1 or self.hidden < 1:
            raise ValueError("repeats, threads and hidden must be >= 1")


def find_pyg_python(explicit: str | None = None) -> str | None:
    """The interpreter that can import torch_geometric: explicit, $FRUGAL_PYG_PYTHON, or this one."""
    import importlib.util
    import os
    import shutil

    for candidate in (explicit, os.environ.get("FRUGAL_PYG_PYTHON")):
        if candidate:
            path = shutil.which(candidate) or candidate
            if not os.path.isfile(path):
                raise FileNotFoundError(f"pyg_python={candidate!r} is not an executable file")
            return path
    if importlib.util.find_spec("torch_geometric") is not None:
        return sys.executable
    return None


def _pyg_weights(kind: str, model) -> dict:
    """Our parameters under PyG's names and layouts (Linear weight (out, in), att (1, H, C))."""
    weights = {}
    for i, layer in enumerate(model.layers):
        p = f"{i}/"
        if kind == "gcn":
            weights[p + "lin.weight"] = np.asarray(layer.linear.kernel[...]).T
            weights[p + "bias"] = np.asarray(layer.bias[...])
        elif kind == "gat":
            weights[p + "lin.weight"] = np.asarray(layer.linear.kernel[...]).T
            weights[p + "att_src"] = np.asarray(layer.att_src[...])[None]
            weights[p + "att_dst"] = np.asarray(layer.att_dst[...])[None]
            weights[p + "bias"] = np.asarray(layer.bias[...])
        else:
            weights[p + "lin_l.weight"] = np.asarray(layer.lin_l.kernel[...]).T
            weights[p + "lin_l.bias"] = np.asarray(layer.lin_l.bias[...])
            weights[p + "lin_r.weight"] = np.asarray(layer.lin_r.kernel[...]).T
    return weights


def _run_pyg(pyg_python: str, request: dict, case: str, config: BenchConfig):
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        req, res = Path(tmp) / "request.npz", Path(tmp) / "result.json"
        np.savez(req, **request)
        env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "MKL_NUM_THREADS": str(config.threads)}
        done = subprocess.run([pyg_python, str(Path(__file__).resolve()), "time", str(req), str(res)],
                              capture_output=True, text=True, timeout=config.timeout_s, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"PyG timing failed in {pyg_python}:\n{done.stderr[-3000:]}")
        result = json.loads(res.read_text())
        out_path = Path(f"{res}.{case}.edge_index.npy")
        output = np.load(out_path) if out_path.exists() else None
    theirs = {k: v for k, v in result["results"][0].items() if k.startswith("pyg_")}
    return theirs, output, {k: result[k] for k in ("torch", "torch_geometric", "threads")}


def run(config: BenchConfig, progress=None) -> dict:
    """Times 2-layer GCN/GAT/SAGE inference here (fused and unfused Gather, one jit each) and in
    PyG (edge_index and CSR adjacency) on the same graphs and weights; ratios > 1 mean we are faster."""
    from pathlib import Path

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from models.gnn_layers import GNNClassifier, prepare_graph
    from scripts import graph_data
    from scripts.report import machine_description, markdown_table, write_json

    pyg_python = find_pyg_python(config.pyg_python)
    status = "compared" if pyg_python else SKIPPED
    rows, pyg_meta = [], {}
    for name in config.datasets:
        data = graph_data.load_graph_dataset(name, config.data_root, seed=config.seed)
        x = jnp.asarray(data.x)
        for kind in config.models:
            hidden = 8 if kind == "gat" else config.hidden
            model = GNNClassifier(kind, data.x.shape[1], data.num_classes, hidden=hidden, heads=config.heads,
                                  dropout=0.0, rngs=nnx.Rngs(config.seed))
            model.eval()
            graph = prepare_graph(kind, data.to_graph())
            graphdef, params = nnx.split(model)
            row = {"case": f"{name}_{kind}", "dataset": name, "model": kind, "nodes": data.num_nodes,
                   "edges": data.num_edges}
            for fused in (False, True):
                forward = jax.jit(lambda p, g, x, fused=fused: nnx.merge(graphdef, p)(g, x, fused=fused))
                compiled = forward.lower(params, graph, x).compile()
                row[f"ours_{'fused' if fused else 'unfused'}_ms"] = _median_ms(
                    lambda: jax.block_until_ready(compiled(params, graph, x)), config.repeats)
                ours_output = np.asarray(compiled(params, graph, x))
            row["ours_best_ms"] = min(row["ours_fused_ms"], row["ours_unfused_ms"])
            if pyg_python:
                # PyG runs right after ours, one case per subprocess, so both see similar machine load.
                request = {"threads": np.array(config.threads), "repeats": np.array(config.repeats),
                           "cases": np.array([row["case"]])}
                prefix = row["case"] + "/"
                request[prefix + "kind"] = np.array(kind)
                request[prefix + "dims"] = np.array([data.x.shape[1], hidden, data.num_classes, config.heads])
                request[prefix + "x"] = data.x
                request[prefix + "edge_index"] = data.edge_index
                for key, value in _pyg_weights(kind, model).items():
                    request[prefix + "w/" + key] = value.astype(np.float32)
                theirs, output, pyg_meta = _run_pyg(pyg_python, request, row["case"], config)
                row.update(theirs)
                times = [t for t in (theirs.get("pyg_edge_index_ms"), theirs.get("pyg_csr_ms")) if t]
                row["pyg_best_ms"] = min(times) if times else None
                row["speedup_vs_pyg_best"] = row["pyg_best_ms"] / row["ours_best_ms"] if times else None
                if output is not None:
                    row["max_abs_diff_vs_pyg"] = float(np.max(np.abs(output - ours_output)))
            rows.append(row)
            if progress:
                ratio = f", PyG best {row['pyg_best_ms']:.2f} ms" if row.get("pyg_best_ms") else ""
                progress(f"{row['case']}: ours {row['ours_best_ms']:.2f} ms{ratio}")
    figures = {"config": dataclasses.asdict(config), "status": status, "pyg": pyg_meta,
               "machine": machine_description(), "results": rows,
               "note": "2-layer models, inference, median of repeats after warm-up; graph preprocessing "
                       "(self loops, sorting, degrees) is done once beforehand on our side, as PyG's cached=True; "
                       "PyG runs in a subprocess with torch.set_num_threads(threads). Shared machine: noisy."}
    if config.outdir:
        outdir = Path(config.outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        write_json(outdir / "gnn_bench.json", figures)
        table = markdown_table(
            ["graph", "model", "ours fused ms", "ours unfused ms", "PyG edge_index ms", "PyG CSR ms",
             "PyG best / ours"],
            [[r["dataset"], r["model"], f"{r['ours_fused_ms']:.3f}", f"{r['ours_unfused_ms']:.3f}",
              r.get("pyg_edge_index_ms") or "-", r.get("pyg_csr_ms") or "-",
              f"{r['speedup_vs_pyg_best']:.2f}x" if r.get("speedup_vs_pyg_best") else status] for r in rows])
        header = "# GNN inference: frugal (JAX) vs PyG"
        (outdir / "gnn_bench.md").write_text(f"{header}\n\n{table}\n\n{figures['note']}\n")
    return figures


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "golden":
        write_golden(argv[1])
        return 0
    if len(argv) >= 3 and argv[0] == "time":
        time_request(argv[1], argv[2])
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
