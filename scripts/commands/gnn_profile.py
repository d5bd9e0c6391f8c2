"""frugal gnn profile: per-stage GNN profile (Scatter/ApplyEdge/Gather/ApplyVertex), fused vs
unfused Gather, and GCN/GAT node classification on built-in (or user-supplied) graphs."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("gnn", "profile")
HELP = "per-stage time/FLOPs/bytes of GCN, GAT, GGNN, RGCN, GraphSAGE, GIN; fused vs unfused Gather"
TOUR_ORDER = 60


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def add_arguments(parser) -> None:
    from frugal.scripts.gnn_profile import ProfileConfig

    d = ProfileConfig()
    parser.add_argument("--models", type=_csv, default=d.models, help=f"comma list (default {','.join(d.models)})")
    parser.add_argument("--dataset", default=d.dataset, help="cora, citeseer or pubmed (default cora)")
    parser.add_argument("--relational-dataset", default=d.relational_dataset, help="aifb, mutag or bgs, for RGCN")
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder with the raw Planetoid files (ind.<name>.*); default: seeded synthetic graphs of the same size",
    )
    parser.add_argument(
        "--entities-root",
        default=None,
        help="folder with <name>_stripped.nt[.gz], trainingSet.tsv, testSet.tsv for RGCN",
    )
    parser.add_argument("--scale", type=float, default=d.scale, help="shrink the synthetic graphs (0 < s <= 1)")
    parser.add_argument("--features", type=int, default=d.features, help="layer width, in and out (default 64)")
    parser.add_argument("--num-bases", type=int, default=d.num_bases, help="RGCN bases (0: one matrix per relation)")
    parser.add_argument("--repeats", type=int, default=d.repeats, help="timed runs per stage (median)")
    parser.add_argument(
        "--train-models", type=_csv, default=d.train_models, help="classifiers to train (default gcn,gat)"
    )
    parser.add_argument("--train-steps", type=int, default=d.train_steps, help="full-graph training steps (0: skip)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--outdir", default=d.outdir, help="report folder (default reports/gnn)")


def _config(args):
    from frugal.scripts.gnn_profile import ProfileConfig

    return ProfileConfig(
        models=args.models,
        dataset=args.dataset,
        relational_dataset=args.relational_dataset,
        data_root=args.data_root,
        entities_root=args.entities_root,
        scale=args.scale,
        features=args.features,
        num_bases=args.num_bases or None,
        repeats=args.repeats,
        train_models=args.train_models,
        train_steps=args.train_steps,
        seed=args.seed,
        outdir=args.outdir,
    )


def _summary_rows(figures):
    from frugal.models.gnn import STAGES

    rows = []
    for kind, entry in figures["models"].items():
        for mode in ("unfused", "fused"):
            if mode in entry:
                st = entry[mode]["stages"]
                rows.append(
                    [kind, mode]
                    + [f"{st[s]['share']:.2f}" for s in STAGES]
                    + [f"{entry[mode]['total_ms']:.3f}", entry[mode]["dominant"]]
                )
    return rows


def run_command(args) -> dict:
    from rich.console import Console

    from frugal.models.gnn import STAGES
    from frugal.scripts.gnn_profile import run
    from frugal.scripts.report import print_table

    console = Console()
    figures = run(_config(args), progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    if figures["models"]:
        print_table(
            "GNN time share per stage (one layer, separately jitted stages)",
            ["model", "Gather form"] + list(STAGES) + ["ms", "dominant"],
            _summary_rows(figures),
        )
        print_table(
            "paper findings on this CPU",
            ["claim", "this run", "holds"],
            [[f["claim"], f["ours"], "yes" if f["holds"] else "no"] for f in figures["findings"]],
        )
    if figures["training"]:
        print_table(
            "node classification",
            ["model", "graph", "test acc", "chance (majority)", "s"],
            [
                [
                    t["model"],
                    t["dataset"],
                    f"{t['test_accuracy']:.3f}",
                    f"{t['chance_majority']:.3f}",
                    f"{t['seconds']:.1f}",
                ]
                for t in figures["training"]
            ],
        )
    if args.outdir:
        console.print(f"report: {Path(args.outdir) / 'gnn_profile.md'}")
    return figures


def tour_section(quick: bool, outdir: Path):
    from frugal.scripts.gnn_profile import ProfileConfig, plot_shares, profile_markdown, run
    from frugal.scripts.tour import TourSection

    if quick:  # a Cora-shaped graph at a third of the size; every stage still runs separately
        config = ProfileConfig(
            models=("gcn", "gat", "rgcn", "sage_lstm"),
            scale=0.3,
            features=32,
            repeats=3,
            num_bases=4,
            train_models=("gcn",),
            train_steps=50,
            outdir=None,
        )
    else:
        config = ProfileConfig(outdir=None)
    figures = run(config)
    plot = "gnn_stage_breakdown.png"
    plot_shares(figures, Path(outdir) / plot)
    summary = [
        (f["claim"].split(" (")[0], f"{'holds' if f['holds'] else 'differs'}: {f['ours']}") for f in figures["findings"]
    ]
    summary += [
        (
            f"{t['model'].upper()} test accuracy ({t['dataset']}, {t['steps']} steps)",
            f"{t['test_accuracy']:.3f} (majority class {t['chance_majority']:.3f})",
        )
        for t in figures["training"]
    ]
    return TourSection(
        title="GNN workload characterization (per-stage profile)",
        figures=figures,
        markdown=profile_markdown(figures).split("\n", 1)[1],
        summary=summary,
        plots=[plot],
    )
