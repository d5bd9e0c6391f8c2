"""frugal gnn bench: 2-layer GCN/GAT/GraphSAGE inference, ours (JAX) beside PyTorch Geometric."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("gnn", "bench")
HELP = "GCN/GAT/SAGE inference time vs PyTorch Geometric (needs the bench extra or --pyg-python)"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def add_arguments(parser) -> None:
    from frugal.scripts.gnn_pyg_bench import BenchConfig

    d = BenchConfig()
    parser.add_argument("--datasets", type=_csv, default=d.datasets, help="comma list (default cora,pubmed)")
    parser.add_argument("--models", type=_csv, default=d.models, help="comma list of gcn,gat,sage")
    parser.add_argument("--repeats", type=int, default=d.repeats, help="timed calls per variant (median)")
    parser.add_argument(
        "--calls-per-round",
        type=int,
        default=d.calls_per_round,
        help="ours and PyG's paths take turns in rounds of this many calls",
    )
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads for PyG (default 2)")
    parser.add_argument(
        "--pyg-python",
        default=None,
        help="python with torch + torch_geometric (default: this one if it has them, else "
        "$FRUGAL_PYG_PYTHON); PyG then runs in a subprocess of it",
    )
    parser.add_argument("--data-root", default=None, help="real Planetoid files instead of synthetic graphs")
    parser.add_argument("--outdir", default=d.outdir, help="report folder (default reports/gnn)")


def run_command(args) -> dict:
    from rich.console import Console

    from frugal.scripts.gnn_pyg_bench import BREAKDOWN_HEADER, TABLE_HEADER, BenchConfig, breakdown_rows, run, table_row
    from frugal.scripts.report import print_table

    console = Console()
    config = BenchConfig(
        datasets=args.datasets,
        models=args.models,
        repeats=args.repeats,
        calls_per_round=args.calls_per_round,
        threads=args.threads,
        pyg_python=args.pyg_python,
        data_root=args.data_root,
        outdir=args.outdir,
    )
    figures = run(config, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    rows = [table_row(r, figures["status"]) for r in figures["results"]]
    print_table("GNN inference (2 layers): ours vs PyG (ratio > 1: ours faster)", TABLE_HEADER, rows)
    parts = breakdown_rows(figures["results"])
    if parts:
        print_table("GCN pieces alone, median / fastest call (ms)", BREAKDOWN_HEADER, parts)
    if figures["status"] != "compared":
        console.print(figures["status"])
    if args.outdir:
        console.print(f"report: {Path(args.outdir) / 'gnn_bench.md'}")
    return figures
