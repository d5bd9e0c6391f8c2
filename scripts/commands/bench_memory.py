"""frugal bench memory: activation memory policies (autodiff / nested forward-AD / recompute / low-precision
derivative / auto) on four models in three execution regimes."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("bench", "memory")
HELP = "activation memory: nested forward-AD vs autodiff vs recompute, residual/temp bytes and step time"
TOUR_ORDER = 20


def add_arguments(parser) -> None:
    from frugal.scripts.memory_bench import MODELS
    from frugal.transforms.activation_policy import POLICIES, REGIMES

    parser.add_argument("--quick", action="store_true", help="smaller models and batches (about a minute of CPU time)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to measure")
    parser.add_argument(
        "--policies", nargs="+", choices=POLICIES, default=list(POLICIES), help="policies (autodiff always needed)"
    )
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES), help="execution regimes")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per configuration, interleaved across policies (fastest reported)",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference_check",
        action="store_false",
        help="skip compiling the issue's 2048-row GELU-tanh MLP for comparison",
    )
    parser.add_argument("--outdir", default="reports/memory", help="where memory.{json,md,png} go")


def _write(figures: dict, outdir: Path) -> list[Path]:
    from frugal.scripts.memory_bench import markdown_report, plot_memory
    from frugal.scripts.report import write_json

    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "memory.md"
    md.write_text(markdown_report(figures))
    return [write_json(outdir / "memory.json", figures), md, plot_memory(figures, outdir / "memory.png")]


def run_command(args) -> dict:
    from frugal.scripts.memory_bench import TABLE_HEADERS, MemoryBenchConfig, run, table_rows
    from frugal.scripts.report import print_table

    config = MemoryBenchConfig(
        models=tuple(args.models),
        policies=tuple(args.policies),
        regimes=tuple(args.regimes),
        quick=args.quick,
        repeats=args.repeats,
        reference_check=args.reference_check,
    )
    figures = run(config)
    print_table(
        "activation memory (2-core CPU shared with other agents: times are noisy)", TABLE_HEADERS, table_rows(figures)
    )
    print_table(
        "auto checks",
        [
            "model",
            "regime",
            "auto picks",
            "measured as",
            "same program as",
            "memory <= autodiff",
            "fastest at equal memory",
            "time / fastest",
            "within 5%",
        ],
        [
            [
                c["model"],
                c["regime"],
                c["auto_picks"],
                c["auto_measured_as"],
                ", ".join(c["same_program_as"]) or "-",
                c["memory_not_worse_than_autodiff"],
                c["fastest_at_equal_memory"],
                c["time_vs_fastest"],
                c["time_within_tolerance"],
            ]
            for c in figures["auto_checks"]
        ],
    )
    for path in _write(figures, Path(args.outdir)):
        print(f"wrote {path}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """A small model's memory table: the GELU-tanh MLP in the jit and split regimes (eager too with --full)."""
    from frugal.scripts.memory_bench import MemoryBenchConfig, markdown_table_for_tour, plot_memory, run
    from frugal.scripts.tour import TourSection

    config = MemoryBenchConfig(
        models=("gelu_mlp",) if quick else ("gelu_mlp", "mish_cnn"),
        regimes=("jit", "split") if quick else ("jit", "split", "eager"),
        quick=True,
        repeats=2 if quick else 3,
        reference_check=False,
    )
    figures = run(config, progress=lambda _: None)
    plot = plot_memory(figures, outdir / "bench_memory.png")
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
