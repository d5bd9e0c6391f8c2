"""`frugal accel ant|salo|sweep` and the accelerator section of the tour."""

from __future__ import annotations

from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.accel.config import (
    ANT_PRESETS,
    PRESETS,
    SALO_PRESETS,
    SWEEP_PRESETS,
    AntConfig,
    SaloConfig,
    SweepConfig,
)

TOUR_ORDER = 50


def _rows(figures):
    from frugal.scripts.systems.accel.ant_table import BASELINES

    rows = []
    for r in figures["rows"] + [dict(model="mean", **figures["means"])]:
        cells = [r["model"]]
        for name in BASELINES:
            c = r[name]
            paper = f" ({c['paper_speedup']:.2f}/{c['paper_energy']:.2f})" if c["paper_speedup"] else ""
            cells.append(f"{c['speedup']:.2f}/{c['energy']:.2f}{paper}")
        rows.append(cells)
    return rows


def run_ant_command(config: AntConfig) -> dict:
    from frugal.scripts.report import print_table, write_json
    from frugal.scripts.systems.accel.ant_table import BASELINES, ant_markdown, ant_plot, run_ant

    figures = run_ant(config)
    print_table("ANT-OS vs baselines: speedup / energy ratio, ours (paper)", ["model", *BASELINES], _rows(figures))
    print(
        f"largest deviation from the paper: per model {figures['worst_model_deviation'] * 100:.1f}% (target 15%), "
        f"means {figures['worst_mean_deviation'] * 100:.1f}% (target 10%)"
    )
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "ant.md").write_text(ant_markdown(figures))
    for path in (write_json(outdir / "ant.json", figures), outdir / "ant.md", ant_plot(figures, outdir / "ant.png")):
        print(f"wrote {path}")
    return figures


def run_salo_command(config: SaloConfig) -> dict:
    from frugal.scripts.report import machine_line, print_table, write_json
    from frugal.scripts.systems.accel.salo_table import run_salo, salo_markdown

    figures = run_salo(config)
    print_table(
        "SALO cycles at 1 GHz (ours vs the reference performance model)",
        ["workload", "cycles", "reference", "utilization", "latency ms", "energy mJ"],
        [
            [
                r["workload"],
                f"{r['cycles']:,}",
                f"{r['golden_cycles']:,}",
                f"{r['utilization'] * 100:.1f}%",
                f"{r['latency_ms_1ghz']:.3f}",
                f"{r['energy_mj_1ghz']:.3f}",
            ]
            for r in figures["cycles"]
        ],
    )
    rows = []
    if figures["mean_cpu_speedup"] is not None:
        rows.append(
            [
                f"CPU: {figures['cpu_implementation']} (measured)",
                f"{figures['mean_cpu_speedup']:.1f}x",
                f"{figures['paper_speedup']['cpu']}x",
            ]
        )
    rows += [
        [
            f"GPU {name} (roofline; energy {figures['mean_gpu_energy_advantage'][name]:.1f}x lower on SALO)",
            f"{v:.2f}x",
            f"{figures['paper_speedup']['gpu']}x",
        ]
        for name, v in figures["mean_gpu_speedup"].items()
    ]
    print_table(
        "SALO mean speedup (CPU measured here: " + machine_line() + ")",
        ["baseline", "ours", "paper"],
        rows,
    )
    fp = figures["fixed_point"]
    print(
        f"fixed-point mode: max |error| {fp['max_abs_error']:.4f}, mean {fp['mean_abs_error']:.5f}, "
        f"bound {fp['bound']} -> {'OK' if fp['within_bound'] else 'EXCEEDED'}"
    )
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "salo.md").write_text(salo_markdown(figures))
    for path in (write_json(outdir / "salo.json", figures), outdir / "salo.md"):
        print(f"wrote {path}")
    return figures


def run_sweep_command(config: SweepConfig) -> dict:
    from frugal.scripts.report import machine_line, print_table, write_json
    from frugal.scripts.systems.accel.design_sweep import run_sweep, sweep_markdown, sweep_plot

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
    print(f"benchmark: {b['points_per_s']:,.0f} design points/s ({machine_line()})")
    s = figures["search"]
    print(
        f"grad search: rows {s['design']['rows']:.0f} cols {s['design']['cols']:.0f} buffer "
        f"{s['design']['buffer_kib']:.0f} KiB, latency {s['exact']['latency_s'] * 1e3:.3f} ms, "
        f"area {s['exact']['area_mm2']:.2f} mm2"
    )
    if not s["within_area_budget"]:
        print(f"warning: the design found is over its area budget by {s['area_over_budget_mm2']:.2f} mm2")
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "sweep.md").write_text(sweep_markdown(figures))
    paths = (write_json(outdir / "sweep.json", figures), outdir / "sweep.md", sweep_plot(figures, outdir / "sweep.png"))
    for path in paths:
        print(f"wrote {path}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The accelerator cost model in one section: ANT table, SALO cycles and fixed point, a sweep."""
    from frugal.scripts.systems.accel.ant_table import ant_markdown, ant_plot
    from frugal.scripts.systems.accel.design_sweep import sweep_markdown, sweep_plot
    from frugal.scripts.systems.accel.experiment import run
    from frugal.scripts.systems.accel.salo_table import salo_markdown
    from frugal.scripts.tour import TourSection

    figures_all = run(PRESETS["tour" if quick else "full"])
    ant, salo, sweep = figures_all["ant"], figures_all["salo"], figures_all["sweep"]
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


COMMANDS = [
    config_command(
        ("accel", "ant"),
        "ANT accelerator vs BitFusion/OLAccel/AdaFloat/BiScaled: speedup and energy, ours beside the paper's",
        AntConfig,
        ANT_PRESETS,
        run_ant_command,
    ),
    config_command(
        ("accel", "salo"),
        "SALO hybrid-attention accelerator: reference cycles, energy, CPU (measured) and GPU (roofline) speedups",
        SaloConfig,
        SALO_PRESETS,
        run_salo_command,
    ),
    config_command(
        ("accel", "sweep"),
        "design-space sweep (vmap) with a latency/energy/area Pareto plot, points/s benchmark, grad design search",
        SweepConfig,
        SWEEP_PRESETS,
        run_sweep_command,
    ),
]
