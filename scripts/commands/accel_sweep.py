"""frugal accel sweep: array size x buffer size x bit width sweep, Pareto front, design search."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("accel", "sweep")
HELP = "design-space sweep (vmap) with a latency/energy/area Pareto plot, points/s benchmark, grad design search"


def add_arguments(parser) -> None:
    parser.add_argument("--rows", nargs="+", type=int, default=[8, 16, 32, 64, 128], help="array heights")
    parser.add_argument("--cols", nargs="+", type=int, default=[8, 16, 32, 64, 128], help="array widths")
    parser.add_argument(
        "--buffer-kib",
        nargs="+",
        type=int,
        default=[32, 64, 128, 256],
        help="weight/output buffer KiB (activation buffer gets twice this)",
    )
    parser.add_argument("--bits", nargs="+", type=int, default=[2, 4, 8], help="operand bit widths")
    parser.add_argument("--batch", type=int, default=1, help="ResNet-18 batch size")
    parser.add_argument("--benchmark-points", type=int, default=200_000, help="design points in the speed benchmark")
    parser.add_argument("--search-steps", type=int, default=150, help="Adam steps of the gradient design search")
    parser.add_argument("--area-budget", type=float, default=4.0, help="area budget of the design search (mm2)")
    parser.add_argument("--outdir", default="reports/accel", help="where sweep.{json,md,png} go")


def run_command(args) -> dict:
    from frugal.accel.sweep import SearchConfig
    from frugal.scripts.accel_sweep_experiment import SweepConfig, run_sweep, sweep_markdown, sweep_plot
    from frugal.scripts.report import print_table, write_json

    for name in ("rows", "cols", "buffer_kib", "bits"):
        if any(v < 1 for v in getattr(args, name)):
            raise ValueError(f"--{name.replace('_', '-')} values must be >= 1")
    config = SweepConfig(
        rows=tuple(args.rows),
        cols=tuple(args.cols),
        buffer_kib=tuple(args.buffer_kib),
        bits=tuple(args.bits),
        batch=args.batch,
        benchmark_points=args.benchmark_points,
        search=SearchConfig(steps=args.search_steps, area_budget_mm2=args.area_budget),
    )
    figures = run_sweep(config)
    print_table(
        f"Pareto front of {figures['num_points']} design points (ResNet-18)",
        ["rows", "cols", "buffer KiB", "bits", "latency ms", "energy uJ", "area mm2"],
        [
            [r["rows"], r["cols"], r["buffer_kib"], r["bits"], r["latency_ms"], r["energy_uj"], r["area_mm2"]]
            for r in figures["pareto"][:20]
        ],
    )
    b = figures["benchmark"]
    print(f"benchmark: {b['points_per_s']:,.0f} design points/s on this CPU (2 cores shared with other agents)")
    s = figures["search"]
    print(
        f"grad search: rows {s['design']['rows']:.0f} cols {s['design']['cols']:.0f} buffer "
        f"{s['design']['buffer_kib']:.0f} KiB, latency {s['exact']['latency_s'] * 1e3:.3f} ms, "
        f"area {s['exact']['area_mm2']:.2f} mm2"
    )
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "sweep.md").write_text(sweep_markdown(figures))
    paths = (write_json(outdir / "sweep.json", figures), outdir / "sweep.md", sweep_plot(figures, outdir / "sweep.png"))
    for path in paths:
        print(f"wrote {path}")
    return figures
