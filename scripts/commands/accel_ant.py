"""frugal accel ant: reproduce ANT's speedup/energy table against BitFusion, OLAccel, AdaFloat, BiScaled."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("accel", "ant")
HELP = "ANT accelerator vs BitFusion/OLAccel/AdaFloat/BiScaled: normalized speedup and energy, ours beside the paper's"
TOUR_ORDER = 50


def add_arguments(parser) -> None:
    from frugal.accel.paper_workloads import MODELS

    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="workloads (default: all)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (ANT's set-up: 64)")
    parser.add_argument(
        "--hand-resnets",
        dest="trace_resnets",
        action="store_false",
        help="use the hand-written ResNet layer lists instead of tracing frugal.models.resnet",
    )
    parser.add_argument("--outdir", default="reports/accel", help="where ant.{json,md,png} go")


def _rows(figures):
    from frugal.scripts.accel_ant_experiment import BASELINES

    rows = []
    for r in figures["rows"] + [dict(model="mean", **figures["means"])]:
        cells = [r["model"]]
        for name in BASELINES:
            c = r[name]
            paper = f" ({c['paper_speedup']:.2f}/{c['paper_energy']:.2f})" if c["paper_speedup"] else ""
            cells.append(f"{c['speedup']:.2f}/{c['energy']:.2f}{paper}")
        rows.append(cells)
    return rows


def run_command(args) -> dict:
    from frugal.scripts.accel_ant_experiment import BASELINES, AntConfig, ant_markdown, ant_plot, run_ant
    from frugal.scripts.report import print_table, write_json

    figures = run_ant(AntConfig(models=tuple(args.models), batch=args.batch, trace_resnets=args.trace_resnets))
    print_table("ANT-OS vs baselines: speedup / energy ratio, ours (paper)", ["model", *BASELINES], _rows(figures))
    print(
        f"largest deviation from the paper: per model {figures['worst_model_deviation'] * 100:.1f}% (target 15%), "
        f"means {figures['worst_mean_deviation'] * 100:.1f}% (target 10%)"
    )
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "ant.md").write_text(ant_markdown(figures))
    for path in (write_json(outdir / "ant.json", figures), outdir / "ant.md", ant_plot(figures, outdir / "ant.png")):
        print(f"wrote {path}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The accelerator cost model in one section: ANT table, SALO cycles and fixed point, a sweep."""
    from frugal.accel.sweep import SearchConfig
    from frugal.scripts.accel_ant_experiment import AntConfig, ant_markdown, ant_plot, run_ant
    from frugal.scripts.accel_salo_experiment import SaloConfig, run_salo, salo_markdown
    from frugal.scripts.accel_sweep_experiment import SweepConfig, run_sweep, sweep_markdown, sweep_plot
    from frugal.scripts.tour import TourSection

    ant = run_ant(AntConfig())
    salo = run_salo(
        SaloConfig(
            cpu_workloads=("vil_stage2",) if quick else ("vil_stage2", "vil_stage1", "longformer"),
            cpu_repeats=1 if quick else 3,
            fixed_point_seq=64 if quick else 256,
        )
    )
    sweep = run_sweep(
        SweepConfig(
            rows=(8, 16, 32, 64) if quick else (8, 16, 32, 64, 128),
            cols=(8, 16, 32, 64) if quick else (8, 16, 32, 64, 128),
            benchmark_points=50_000 if quick else 200_000,
            search=SearchConfig(steps=20 if quick else 150),
        )
    )
    plots = [ant_plot(ant, outdir / "accel_ant.png").name, sweep_plot(sweep, outdir / "accel_sweep.png").name]
    means = ant["means"]
    summary = [
        (
            f"ANT vs {n} (speedup/energy)",
            f"{m['speedup']:.2f}x/{m['energy']:.2f}x (paper {m['paper_speedup']}x/{m['paper_energy']}x)",
        )
        for n, m in means.items()
    ]
    summary += [
        (f"SALO {r['workload']} cycles", f"{r['cycles']:,} (reference {r['golden_cycles']:,})") for r in salo["cycles"]
    ]
    summary += [
        (
            "SALO fixed point max |err|",
            f"{salo['fixed_point']['max_abs_error']:.4f} (bound {salo['fixed_point']['bound']})",
        ),
        ("sweep throughput (ResNet-18)", f"{sweep['benchmark']['points_per_s']:,.0f} design points/s"),
    ]
    figures = {
        "ant": {k: ant[k] for k in ("rows", "means", "worst_model_deviation", "worst_mean_deviation")},
        "salo": {k: salo[k] for k in ("cycles", "cpu", "mean_cpu_speedup", "mean_gpu_speedup", "fixed_point")},
        "sweep": {k: sweep[k] for k in ("num_points", "pareto", "benchmark", "latency_grad", "search")},
    }
    markdown = "\n".join([ant_markdown(ant), salo_markdown(salo), sweep_markdown(sweep)])
    return TourSection(
        title="Accelerator cost model: ANT and SALO designs, sweeps",
        figures=figures,
        markdown=markdown,
        summary=summary,
        plots=plots,
    )
