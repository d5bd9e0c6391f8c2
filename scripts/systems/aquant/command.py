"""`frugal quant aquant` and the AQuant section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.aquant.config import PRESETS, AQuantConfig

TOUR_ORDER = 35
HELP = "AQuant vs QDrop-style vs round-to-nearest PTQ on ResNet-8 and ResNet-20, over seeds (W2A2, W3A3, ...)"
DESCRIPTION = (
    "Trains float CIFAR-style ResNets (--models; ResNet-8 and ResNet-20 by default) on the built-in shapes set "
    "(or --dataset cifar10/imagefolder with --data-path), then post-training quantizes each with "
    "round-to-nearest, QDrop-style block reconstruction (AdaRound weights, LSQ activation scales, drop p=0.5) "
    "and AQuant (the same plus learned rounding borders: per channel x level, channel, level or tensor; with "
    "--granularity auto the granularity is picked per setting on held-out validation images), once per seed "
    "in --seeds (calibration subset and reconstruction randomness), first/last layers 8-bit. Prints the "
    "seed-mean accuracy table with each seed's figures, seed-level verdicts (a difference holds only beyond "
    "its seed spread and two standard errors), the papers' ResNet-18 ImageNet numbers beside ours and the "
    "undecided AdaRound share per block. Float models and reconstructed blocks are cached (--cache-dir), so "
    "a killed run resumes. Writes aquant.{json,md,png} under --outdir. --preset tour is the tour's "
    "half-minute run."
)


def run_and_print(config: AQuantConfig) -> dict:
    from frugal.scripts import report
    from frugal.scripts.report import machine_text
    from frugal.scripts.systems.aquant.experiment import run, tables

    figures = run(config)
    for title, headers, rows in tables(figures):
        report.print_table(title, headers, rows)
    print(f"machine: {machine_text(figures['machine'])}; {figures['seconds']:.0f} s")
    print(f"report: {Path(config.outdir) / 'aquant.md'}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The `tour` preset (about half a minute: W2A2 on the digits), or `full` with `--full`."""
    from frugal.scripts.systems.aquant.experiment import markdown, run
    from frugal.scripts.tour import TourSection

    config = dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=str(outdir / "aquant"))
    figures = run(config)
    summary = []
    labels = {"rtn": "RTN", "qdrop": "QDrop-style", "aquant": "AQuant"}
    for model_name, m in figures["models"].items():
        for name, per_method in m["summary"].items():
            methods = [k for k in ("rtn", "qdrop", "aquant") if k in per_method]
            seeds = len(figures["seeds"])
            summary.append(
                (
                    f"{model_name} {name} top-1 % FP / "
                    + " / ".join(labels[k] for k in methods)
                    + ("" if seeds == 1 else f" (mean of {seeds} seeds)"),
                    " / ".join(f"{v:.1f}" for v in (100 * m["fp_accuracy"], *(per_method[k]["mean"] for k in methods))),
                )
            )
    plots = [str(Path(figures["plot"]).relative_to(outdir))] if figures.get("plot") else []
    return TourSection(
        title="AQuant learned rounding borders (quant aquant)",
        figures=figures,
        markdown=markdown(figures, include_plot=False),
        summary=summary,
        plots=plots,
    )


COMMANDS = [config_command(("quant", "aquant"), HELP, AQuantConfig, PRESETS, run_and_print, description=DESCRIPTION)]
