"""`frugal bench memory` and its tour section: activation memory policies (autodiff / nested forward-AD /
recompute / low-precision derivative / auto) on four models in three execution regimes."""

from __future__ import annotations

from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.activation_memory.config import PRESETS, ActivationMemoryConfig

TOUR_ORDER = 20

AUTO_CHECK_HEADERS = [
    "model",
    "regime",
    "auto picks",
    "measured as",
    "same program as",
    "memory <= autodiff",
    "fastest at equal memory",
    "time / fastest",
    "within 5%",
]


def write_reports(figures: dict, outdir: Path) -> list[Path]:
    """memory.json, memory.md and memory.png under `outdir`."""
    from frugal.scripts.report import write_json
    from frugal.scripts.systems.activation_memory.experiment import markdown_report, plot_memory

    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "memory.md"
    md.write_text(markdown_report(figures))
    return [write_json(outdir / "memory.json", figures), md, plot_memory(figures, outdir / "memory.png")]


def run_and_print(config: ActivationMemoryConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.activation_memory.experiment import TABLE_HEADERS, auto_check_rows, run, table_rows

    figures = run(config)
    print_table(f"activation memory ({figures['machine_line']})", TABLE_HEADERS, table_rows(figures))
    print_table(
        "auto checks",
        AUTO_CHECK_HEADERS,
        auto_check_rows(figures),
    )
    for path in write_reports(figures, Path(config.outdir)):
        print(f"wrote {path}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The memory table of the `tour` preset (the small GELU-tanh MLP, jit and split), or of `full`."""
    from frugal.scripts.systems.activation_memory.experiment import markdown_table_for_tour, plot_memory, run
    from frugal.scripts.tour import TourSection

    figures = run(PRESETS["tour" if quick else "full"], progress=lambda _: None)
    plot = plot_memory(figures, outdir / "activation_memory.png")
    ratio = figures["split_residual_reduction_nested_vs_autodiff"]
    speed = figures["nested_speedup_vs_recompute"]
    summary = [
        (f"{m} split residuals, nested vs autodiff", f"{r:.2f}x lower (paper: up to 1.97x)") for m, r in ratio.items()
    ]
    summary += [(f"{k} nested vs recompute time", f"{v:.2f}x") for k, v in speed.items()]
    return TourSection(
        title="Nested forward-AD activations: activation memory policy",
        figures=figures,
        markdown=markdown_table_for_tour(figures),
        summary=summary,
        plots=[plot.name],
    )


COMMANDS = [
    config_command(
        ("bench", "memory"),
        "activation memory: nested forward-AD vs autodiff vs recompute, residual/temp bytes and step time",
        ActivationMemoryConfig,
        PRESETS,
        run_and_print,
    )
]
