"""frugal gnn bench: 2-layer GCN/GAT/GraphSAGE inference, ours (JAX) beside PyTorch Geometric."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("gnn", "bench")
HELP = "GCN/GAT/SAGE inference time vs PyTorch Geometric (needs the bench extra or --pyg-python)"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def add_arguments(parser) -> None:
    from scripts.gnn_pyg_bench import BenchConfig

    d = BenchConfig()
    parser.add_argument("--datasets", type=_csv, default=d.datasets, help="comma list (default cora,pubmed)")
    parser.add_argument("--models", type=_csv, default=d.models, help="comma list of gcn,gat,sage")
    parser.add_argument("--repeats", type=int, default=d.repeats, help="timed runs (median)")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads for PyG (default 2)")
    parser.add_argument("--pyg-python", default=None,
                        help="python with torch + torch_geometric (default: this one if it has them, else "
                             "$FRUGAL_PYG_PYTHON); PyG then runs in a subprocess of it")
    parser.add_argument("--data-root", default=None, help="real Planetoid files instead of synthetic graphs")
    parser.add_argument("--outdir", default=d.outdir, help="report folder (default reports/gnn)")


def run_command(args) -> dict:
    from rich.console import Console

    from scripts.gnn_pyg_bench import BenchConfig, run
    from scripts.report import print_table

    console = Console()
    config = BenchConfig(datasets=args.datasets, models=args.models, repeats=args.repeats, threads=args.threads,
                         pyg_python=args.pyg_python, data_root=args.data_root, outdir=args.outdir)
    figures = run(config, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    rows = [[r["dataset"], r["model"], f"{r['ours_fused_ms']:.3f}", f"{r['ours_unfused_ms']:.3f}",
             r.get("pyg_edge_index_ms") or "-", r.get("pyg_csr_ms") or "-",
             f"{r['speedup_vs_pyg_best']:.2f}x" if r.get("speedup_vs_pyg_best") else figures["status"]]
            for r in figures["results"]]
    print_table("GNN inference (2 layers): ours vs PyG (ratio > 1: ours faster)",
                ["graph", "model", "ours fused ms", "ours unfused ms", "PyG edge_index ms", "PyG CSR ms",
                 "PyG best / ours"], rows)
    if figures["status"] != "compared":
        console.print(figures["status"])
    if args.outdir:
        console.print(f"report: {Path(args.outdir) / 'gnn_bench.md'}")
    return figures
