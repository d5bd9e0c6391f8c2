"""Design-space sweeps of the accelerator cost model: a grid sweep with its Pareto front, a
design-points-per-second benchmark, and a gradient-driven design search under an area budget.

`run_sweep` takes a frozen config and returns a plain dict of figures; `frugal accel sweep` and
the tour call it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from frugal.accel import cost, designs, paper_workloads, sweep
from frugal.scripts import report
from frugal.scripts.systems.accel.config import SweepConfig


def run_sweep(config: SweepConfig = SweepConfig()) -> dict:
    """Grid sweep with its Pareto front, a design-points/s benchmark, and a gradient design search."""
    machine_before = report.machine_description()
    start = time.perf_counter()
    workload = paper_workloads.resnet18().with_batch(config.batch)
    points = sweep.grid(config.rows, config.cols, config.buffer_kib, config.bits)
    out = {k: np.asarray(v) for k, v in sweep.sweep_points(workload, **points).items()}
    mask = sweep.pareto_mask(out["latency_s"], out["energy_pj"], out["area_mm2"])
    table = [
        {
            "rows": float(points["rows"][i]),
            "cols": float(points["cols"][i]),
            "buffer_kib": float(points["buffer_kib"][i]),
            "bits": float(points["bits"][i]),
            "latency_ms": float(out["latency_s"][i] * 1e3),
            "energy_uj": float(out["energy_pj"][i] * 1e-6),
            "area_mm2": float(out["area_mm2"][i]),
        }
        for i in np.flatnonzero(mask)
    ]
    table.sort(key=lambda r: r["area_mm2"])
    bench = sweep.throughput_benchmark(workload, num_points=config.benchmark_points)

    # gradient check: d latency / d (rows, cols, buffer) through the relaxed model is finite
    layers = cost.layer_arrays(workload)
    base = designs.make_design(rows=32, cols=32)
    grad = jax.jit(  # one program; run eagerly, the gradient compiles each of its ops on its own
        jax.grad(
            lambda r, c, b: cost.evaluate(base.replace(rows=r, cols=c, wbuf_kib=b), layers, relaxed=True)["latency_s"],
            argnums=(0, 1, 2),
        )
    )(32.0, 32.0, 128.0)
    search = sweep.grad_design_search(workload, config.search)
    return {
        "config": dataclasses.asdict(config),
        "num_points": int(len(points["rows"])),
        "pareto": table,
        "points": {k: v.tolist() for k, v in out.items()},
        "grid": {k: v.tolist() for k, v in points.items()},
        "pareto_mask": mask.tolist(),
        "benchmark": bench,
        "latency_grad": {"rows": float(grad[0]), "cols": float(grad[1]), "wbuf_kib": float(grad[2])},
        "search": search,
        "seconds": time.perf_counter() - start,
        "machine": report.machine_record(machine_before),
        "notes": [
            "ResNet-18 (ImageNet, 224x224) workload; compile time excluded, first call reported separately; "
            f"points/s measured on {report.machine_line(machine_before)}."
        ],
    }


def sweep_markdown(f: dict) -> str:
    b = f["benchmark"]
    lines = [
        "# Design-space sweep (ResNet-18)",
        "",
        f"{f['num_points']} grid points; {len(f['pareto'])} on the latency-energy-area Pareto front.",
        "",
        "| rows | cols | buffer KiB | bits | latency ms | energy uJ | area mm2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in f["pareto"][:25]:
        lines.append(
            f"| {r['rows']:.0f} | {r['cols']:.0f} | {r['buffer_kib']:.0f} | {r['bits']:.0f} | "
            f"{r['latency_ms']:.3f} | {r['energy_uj']:.1f} | {r['area_mm2']:.2f} |"
        )
    s = f["search"]
    lines += [
        "",
        f"Benchmark: {b['points_per_s']:,.0f} design points/s ({b['layer_evaluations_per_s']:,.0f} layer "
        f"evaluations/s; {b['num_points']:,} points in {b['best_s']:.3f} s, first call "
        f"{b['first_call_s']:.2f} s).",
        "",
        f"d latency / d (rows, cols, weight buffer) = ({f['latency_grad']['rows']:.3g}, "
        f"{f['latency_grad']['cols']:.3g}, {f['latency_grad']['wbuf_kib']:.3g}) s per unit (finite).",
        "",
        f"Gradient design search ({s['config']['steps']} Adam steps, area budget "
        f"{s['config']['area_budget_mm2']} mm2, "
        f"{s['config']['bits']}-bit): rows {s['design']['rows']:.0f}, cols {s['design']['cols']:.0f}, buffer "
        f"{s['design']['buffer_kib']:.0f} KiB -> latency {s['exact']['latency_s'] * 1e3:.3f} ms, energy "
        f"{s['exact']['energy_pj'] * 1e-6:.1f} uJ, area {s['exact']['area_mm2']:.2f} mm2 (exact model).",
        "",
    ]
    if not s["within_area_budget"]:
        lines += [
            f"**The design found is over its area budget by {s['area_over_budget_mm2']:.2f} mm2** (the budget is a "
            "penalty during the search; rounding or too few steps left it violated): more --search-steps or a "
            "larger --search-penalty.",
            "",
        ]
    lines += [f"- {n}" for n in f["notes"]]
    return "\n".join(lines) + "\n"


def sweep_plot(f: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = f["points"]
    mask = np.asarray(f["pareto_mask"])
    lat = np.asarray(pts["latency_s"]) * 1e3
    en = np.asarray(pts["energy_pj"]) * 1e-6
    area = np.asarray(pts["area_mm2"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sc = ax.scatter(lat, en, c=area, s=10, cmap="viridis", norm=matplotlib.colors.LogNorm())
    ax.scatter(lat[mask], en[mask], facecolors="none", edgecolors="r", s=40, label="Pareto (latency, energy, area)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("energy (uJ)")
    fig.colorbar(sc, label="area (mm2)")
    ax.legend(fontsize=8)
    ax.set_title("ResNet-18 design sweep")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
