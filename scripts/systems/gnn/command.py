"""`frugal gnn profile` (per-stage profile, fused vs unfused Gather, node classification), `frugal gnn
bench` (2-layer inference beside PyTorch Geometric) and the GNN section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.gnn.config import BENCH_PRESETS, PRESETS, GnnBenchConfig, GnnConfig

TOUR_ORDER = 60


def _progress():
    from rich.console import Console

    console = Console()
    return console, lambda msg: console.print(f"[dim]{msg}[/dim]")


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


def run_profile_command(config: GnnConfig) -> dict:
    from frugal.models.gnn import STAGES
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.gnn.experiment import run

    console, progress = _progress()
    figures = run(config, progress=progress)
    if figures["models"]:
        print_table(
            "GNN time share per stage (one layer, separately jitted stages)",
            ["model", "Gather form"] + list(STAGES) + ["ms", "dominant"],
            _summary_rows(figures),
        )
        print_table(
            f"paper findings on this machine ({figures['machine_line']})",
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
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'gnn_profile.md'}")
    return figures


def run_bench_command(config: GnnBenchConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.gnn.pyg_bench import BREAKDOWN_HEADER, TABLE_HEADER, breakdown_rows, run, table_row

    console, progress = _progress()
    figures = run(config, progress=progress)
    rows = [table_row(r, figures["status"]) for r in figures["results"]]
    print_table(
        f"GNN inference (2 layers): ours vs PyG (ratio > 1: ours faster; {figures['machine_line']})", TABLE_HEADER, rows
    )
    parts = breakdown_rows(figures["results"])
    if parts:
        print_table("GCN pieces alone, median / fastest call (ms)", BREAKDOWN_HEADER, parts)
    if figures["status"] != "compared":
        console.print(figures["status"])
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'gnn_bench.md'}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The per-stage profile with its findings and one trained classifier, at the tour's size."""
    from frugal.scripts.systems.gnn.experiment import run
    from frugal.scripts.systems.gnn.stage_profile import plot_shares, profile_markdown
    from frugal.scripts.tour import TourSection

    # The tour keeps its own files: nothing goes to the command's report folder.
    figures = run(dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=None))
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


COMMANDS = [
    config_command(
        ("gnn", "profile"),
        "per-stage time/FLOPs/bytes of GCN, GAT, GGNN, RGCN, GraphSAGE, GIN; fused vs unfused Gather",
        GnnConfig,
        PRESETS,
        run_profile_command,
    ),
    config_command(
        ("gnn", "bench"),
        "GCN/GAT/SAGE inference time vs PyTorch Geometric (needs the bench extra or --pyg-python)",
        GnnBenchConfig,
        BENCH_PRESETS,
        run_bench_command,
    ),
]
