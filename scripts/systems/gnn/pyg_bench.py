"""JAX side of the GNN comparison with PyTorch Geometric (github.com/pyg-team/pytorch_geometric):
our timings, the request to the PyG worker (`pyg_worker.py` beside this file, run as a script by
an interpreter that has torch + torch-geometric), rounds of timed calls that alternate between
ours and PyG's paths, and the comparison tables.

JAX and the rest of the repo are imported inside functions, so importing this module stays cheap
for the CLI's --help.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from frugal.scripts.systems.gnn.config import GnnBenchConfig

SKIPPED = "skipped: install the bench extra (torch==2.13.0 + torch-geometric) or pass --pyg-python"


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


class _PygWorker:
    """The `serve` process for one case: start it, ask for rounds of timed calls, stop it."""

    def __init__(self, pyg_python: str, request: dict, config: GnnBenchConfig, tmp):
        import os
        import subprocess
        from pathlib import Path

        req, self.result = Path(tmp) / "request.npz", Path(tmp) / "result.json"
        np.savez(req, **request)
        # torch.set_num_threads(threads) in the worker; OMP/MKL pools pinned to the same count.
        env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "MKL_NUM_THREADS": str(config.threads)}
        # A script path, not `-m`: the PyG interpreter need not have frugal installed.
        worker = Path(__file__).resolve().with_name("pyg_worker.py")
        self.process = subprocess.Popen(
            [pyg_python, str(worker), "serve", str(req), str(self.result)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if self._read_line() != "ready":
            self._fail()
        self.meta = json.loads(self.result.read_text())

    def _read_line(self) -> str:
        return self.process.stdout.readline().strip()

    def _fail(self):
        self.process.kill()
        raise RuntimeError(f"PyG worker failed:\n{self.process.stderr.read()[-3000:]}")

    def output(self, path: str):
        out = self.result.parent / f"{self.result.name}.{path}.npy"
        return np.load(out) if out.exists() else None

    def time(self, path: str, calls: int) -> list[float]:
        self.process.stdin.write(f"time {path} {calls}\n")
        self.process.stdin.flush()
        line = self._read_line()
        if not line:
            self._fail()
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def _timed_calls(fn, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_times(timers: dict, repeats: int, calls_per_round: int) -> dict:
    """Median and fastest call (ms) per timer, the timers taking turns in rounds of `calls_per_round`.

    Keys: "<timer>" (median) and "<timer minus _ms>_min_ms". The median is the headline; the fastest
    call is the closest to what an idle machine would give when other processes load it (the
    report records the load average before and after)."""
    samples = {name: [] for name in timers}
    for _ in range(-(-repeats // calls_per_round)):
        for name, timer in timers.items():
            samples[name] += timer(calls_per_round)
    out = {}
    for name, times in samples.items():
        out[name] = float(np.median(times) * 1e3)
        out[name.removesuffix("_ms") + "_min_ms"] = float(np.min(times) * 1e3)
    return out


def run(config: GnnBenchConfig, progress=None) -> dict:
    """Times 2-layer GCN/GAT/SAGE inference here (fused and unfused Gather, one jit each) and in
    PyG (edge_index and CSR adjacency) on the same graphs and weights, in alternating rounds;
    ratios > 1 mean we are faster."""
    import os
    import tempfile
    from pathlib import Path

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from frugal.models.gnn_layers import GNNClassifier, prepare_graph
    from frugal.scripts.report import machine_description, machine_line, machine_record, markdown_table, write_json
    from frugal.scripts.systems.gnn import graph_data

    before = machine_description()

    pyg_python = find_pyg_python(config.pyg_python)
    status = "compared" if pyg_python else SKIPPED
    rows, pyg_meta = [], {}
    for name in config.datasets:
        data = graph_data.load_graph_dataset(name, config.data_root, seed=config.seed)
        x = jnp.asarray(data.x)
        for kind in config.models:
            hidden = 8 if kind == "gat" else config.hidden
            model = GNNClassifier(
                kind,
                data.x.shape[1],
                data.num_classes,
                hidden=hidden,
                heads=config.heads,
                dropout=0.0,
                rngs=nnx.Rngs(config.seed),
            )
            model.eval()
            graph = prepare_graph(kind, data.to_graph())
            graphdef, params = nnx.split(model)
            row = {
                "case": f"{name}_{kind}",
                "dataset": name,
                "model": kind,
                "nodes": data.num_nodes,
                "edges": data.num_edges,
            }
            timers = {}
            for fused in (False, True):
                forward = jax.jit(lambda p, g, x, fused=fused: nnx.merge(graphdef, p)(g, x, fused=fused))
                compiled = forward.lower(params, graph, x).compile()
                call = lambda c=compiled: jax.block_until_ready(c(params, graph, x))
                call()  # warm-up
                timers[f"ours_{'fused' if fused else 'unfused'}_ms"] = lambda n, call=call: _timed_calls(call, n)
                ours_output = np.asarray(compiled(params, graph, x))
            if kind == "gcn":
                timers.update(_our_gcn_parts(model, graph, x, hidden, data.num_classes))
            with tempfile.TemporaryDirectory() as tmp:
                worker = None
                if pyg_python:
                    request = {"threads": np.array(config.threads), "cases": np.array([row["case"]])}
                    prefix = row["case"] + "/"
                    request[prefix + "kind"] = np.array(kind)
                    request[prefix + "dims"] = np.array([data.x.shape[1], hidden, data.num_classes, config.heads])
                    request[prefix + "x"] = data.x
                    request[prefix + "edge_index"] = data.edge_index
                    for key, value in _pyg_weights(kind, model).items():
                        request[prefix + "w/" + key] = value.astype(np.float32)
                    worker = _PygWorker(pyg_python, request, config, tmp)
                    pyg_meta = {k: worker.meta[k] for k in ("torch", "torch_geometric", "threads")}
                    for part in worker.meta.get("parts", []):
                        timers[f"pyg_{part}_ms"] = lambda n, part=part: worker.time(part, n)
                    for path in ("edge_index", "csr"):
                        if path in worker.meta["paths"]:
                            timers[f"pyg_{path}_ms"] = lambda n, path=path: worker.time(path, n)
                        else:
                            row[f"pyg_{path}_ms"] = None
                            row[f"pyg_{path}_error"] = worker.meta["errors"].get(path)
                try:
                    row.update(interleaved_times(timers, config.repeats, config.calls_per_round))
                    output = worker.output("edge_index") if worker else None
                finally:
                    if worker:
                        worker.close()
            row["ours_best_ms"] = min(row["ours_fused_ms"], row["ours_unfused_ms"])
            if pyg_python:
                times = [t for t in (row.get("pyg_edge_index_ms"), row.get("pyg_csr_ms")) if t]
                row["pyg_best_ms"] = min(times) if times else None
                row["speedup_vs_pyg_best"] = row["pyg_best_ms"] / row["ours_best_ms"] if times else None
                fastest = [row[k] for k in ("pyg_edge_index_min_ms", "pyg_csr_min_ms") if row.get(k)]
                if fastest:
                    ours_fastest = min(row["ours_fused_min_ms"], row["ours_unfused_min_ms"])
                    row["speedup_vs_pyg_best_fastest_call"] = min(fastest) / ours_fastest
                if output is not None:
                    row["max_abs_diff_vs_pyg"] = float(np.max(np.abs(output - ours_output)))
            rows.append(row)
            if progress:
                ratio = f", PyG best {row['pyg_best_ms']:.2f} ms" if row.get("pyg_best_ms") else ""
                progress(f"{row['case']}: ours {row['ours_best_ms']:.2f} ms{ratio}")
    from frugal.jaxlib_ext import native

    figures = {
        "config": dataclasses.asdict(config),
        "status": status,
        "pyg": pyg_meta,
        "csr_kernel": native.status("csr_matmul"),
        "machine": machine_record(before),
        "machine_line": machine_line(before),
        "results": rows,
        "note": "2-layer models, inference, median over all timed calls after warm-up; ours and PyG's "
        f"paths take turns in rounds of {config.calls_per_round} calls, so all see the same "
        "machine load. Graph preprocessing (self loops, CSR order, degrees) is done once "
        "beforehand on our side, as PyG's cached=True does. PyG runs in a worker process with "
        "torch.set_num_threads(threads) and OMP/MKL_NUM_THREADS=threads; XLA's CPU client "
        f"uses one intra-op thread per core ({os.cpu_count()} here).",
    }
    if config.outdir:
        outdir = Path(config.outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        write_json(outdir / "gnn_bench.json", figures)
        table = markdown_table(TABLE_HEADER, [table_row(r, status) for r in rows])
        header = "# GNN inference: frugal (JAX) vs PyG"
        parts = breakdown_rows(rows)
        breakdown = (
            ("\n\n## GCN pieces alone (median / fastest call, ms)\n\n" + markdown_table(BREAKDOWN_HEADER, parts))
            if parts
            else ""
        )
        (outdir / "gnn_bench.md").write_text(
            f"{header}\n\nMachine: {figures['machine_line']}.\n\n{table}{breakdown}\n\n{figures['note']}\n"
        )
    return figures


def _our_gcn_parts(model, graph, x, hidden: int, classes: int) -> dict:
    """Timers for GCN's pieces on our side: x @ W1, and the fused Gather (SpMM) at both widths."""
    import jax
    import jax.numpy as jnp

    from frugal.models.gnn import spmm

    rng = np.random.default_rng(0)
    kernel = model.layers[0].linear.kernel[...]
    pieces = {"ours_part_xw_ms": (lambda a, b: a @ b, x, kernel)}
    for name, width in (("hidden", hidden), ("out", classes)):
        h = jnp.asarray(rng.random((graph.num_nodes, width), np.float32))
        pieces[f"ours_part_spmm_{name}_ms"] = (spmm, graph, h)
    timers = {}
    for name, (fn, a, b) in pieces.items():
        compiled = jax.jit(fn).lower(a, b).compile()
        call = lambda c=compiled, a=a, b=b: jax.block_until_ready(c(a, b))
        call()
        timers[name] = lambda n, call=call: _timed_calls(call, n)
    return timers


def _ms(value) -> str:
    return f"{value:.3f}" if value else "-"


TABLE_HEADER = [
    "graph",
    "model",
    "ours fused ms",
    "ours unfused ms",
    "PyG edge_index ms",
    "PyG CSR ms",
    "PyG best / ours",
    "same, fastest calls",
]


BREAKDOWN_HEADER = ["graph", "piece", "ours", "PyG (torch)"]
_PIECES = {
    "part_xw": "X @ W1 (dense)",
    "part_spmm_hidden": "A @ H, hidden width",
    "part_spmm_out": "A @ H, output width",
}


def breakdown_rows(rows: list[dict]) -> list[list[str]]:
    """GCN's pieces timed alone on both sides (where measured): where the time of a forward goes."""
    out = []
    for row in rows:
        for part, label in _PIECES.items():
            if f"ours_{part}_ms" not in row:
                continue
            cells = [
                f"{row[f'{side}_{part}_ms']:.3f} / {row[f'{side}_{part}_min_ms']:.3f}"
                if row.get(f"{side}_{part}_ms")
                else "-"
                for side in ("ours", "pyg")
            ]
            out.append([row["dataset"], label, *cells])
    return out


def table_row(row: dict, status: str) -> list[str]:
    """One table row: medians, the ratio of the medians, and the ratio of the fastest calls."""
    ratio = row.get("speedup_vs_pyg_best")
    fastest = row.get("speedup_vs_pyg_best_fastest_call")
    return [
        row["dataset"],
        row["model"],
        f"{row['ours_fused_ms']:.3f}",
        f"{row['ours_unfused_ms']:.3f}",
        _ms(row.get("pyg_edge_index_ms")),
        _ms(row.get("pyg_csr_ms")),
        f"{ratio:.2f}x" if ratio else status,
        f"{fastest:.2f}x" if fastest else "-",
    ]
