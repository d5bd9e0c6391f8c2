"""frugal accel salo: SALO cycles, energy, CPU/GPU baselines and the fixed-point functional mode."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("accel", "salo")
HELP = "SALO hybrid-attention accelerator: golden cycles, energy, CPU (measured) and GPU (roofline) speedups"


def add_arguments(parser) -> None:
    from frugal.accel.salo import GPUS, SALO_WORKLOADS

    parser.add_argument(
        "--cpu-workloads",
        nargs="*",
        choices=sorted(SALO_WORKLOADS),
        default=["vil_stage2", "vil_stage1", "longformer"],
        help="workloads timed on this CPU (none: skip the CPU baseline)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed CPU runs per workload (median)")
    parser.add_argument(
        "--gpus",
        nargs="+",
        choices=sorted(GPUS),
        default=["V100", "A100", "H200"],
        help="GPUs for the roofline baseline",
    )
    parser.add_argument("--fixed-point-seq", type=int, default=256, help="sequence length of the fixed-point check")
    parser.add_argument("--outdir", default="reports/accel", help="where salo.{json,md} go")


def run_command(args) -> dict:
    from frugal.scripts.accel_salo_experiment import SaloConfig, run_salo, salo_markdown
    from frugal.scripts.report import print_table, write_json

    figures = run_salo(
        SaloConfig(
            cpu_workloads=tuple(args.cpu_workloads),
            cpu_repeats=args.repeats,
            gpus=tuple(args.gpus),
            fixed_point_seq=args.fixed_point_seq,
        )
    )
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
        "SALO mean speedup (2-core CPU shared with other agents: CPU times are noisy)",
        ["baseline", "ours", "paper"],
        rows,
    )
    fp = figures["fixed_point"]
    print(
        f"fixed-point mode: max |error| {fp['max_abs_error']:.4f}, mean {fp['mean_abs_error']:.5f}, "
        f"bound {fp['bound']} -> {'OK' if fp['within_bound'] else 'EXCEEDED'}"
    )
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "salo.md").write_text(salo_markdown(figures))
    for path in (write_json(outdir / "salo.json", figures), outdir / "salo.md"):
        print(f"wrote {path}")
    return figures
