"""`frugal quant aquant` and the AQuant section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.aquant.config import PRESETS, AQuantConfig

TOUR_ORDER = 35
HELP = "AQuant vs QDrop-style vs round-to-nearest PTQ on a ResNet (W2A2, W2A4, W3A3, W4A4)"
DESCRIPTION = (
    "Trains a float CIFAR-style ResNet on the built-in shapes set (or --dataset cifar10/imagefolder "
    "with --data-path), then post-training quantizes it with round-to-nearest, QDrop-style block "
    "reconstruction (AdaRound weights, LSQ activation scales, drop p=0.5) and AQuant (the same plus "
    "learned rounding borders: per channel x level, channel, level or tensor; with --granularity auto "
    "the granularity is picked per setting on held-out validation images), all from the same calibration "
    "images and iterations, first/last layers 8-bit. Prints the accuracy table with the papers' ResNet-18 "
    "ImageNet numbers beside ours, every border granularity's accuracy and the per-block reconstruction "
    "errors. Writes aquant.{json,md,png} under --outdir. --preset tour is the tour's half-minute run."
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
    for name, accs in figures["accuracy"].items():
        methods = [m for m in ("rtn", "qdrop", "aquant") if m in accs]
        labels = {"rtn": "RTN", "qdrop": "QDrop-style", "aquant": "AQuant"}
        summary.append(
            (
                f"{name} top-1 % FP / " + " / ".join(labels[m] for m in methods),
                " / ".join(f"{100 * v:.1f}" for v in (figures["fp_accuracy"], *(accs[m] for m in methods))),
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
