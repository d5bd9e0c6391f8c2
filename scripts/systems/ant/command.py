"""`frugal quant ant` and its tour section: ANT numeric types on a whole ResNet and on the pretrained MiniLM."""

from __future__ import annotations

from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.ant.config import PRESETS, AntQuantConfig

TOUR_ORDER = 30

DESCRIPTION = (
    "Quantizes whole models with ANT adaptive numeric types (int/PoT/flint/float chosen per tensor "
    "by MSE; Guo et al., MICRO 2022, arXiv 2208.14286) through regex rules over qwix interception. "
    "ResNet: a float model trained on built-in images (or --dataset cifar10/imagefolder with "
    "--data-path), then W4A4 Int4, IP-F, ANT4 and ANT4-8 after PTQ and after QAT, the paper's "
    "ResNet-18 ImageNet numbers beside. MiniLM: the real all-MiniLM-L6-v2, float vs Int4 vs ANT4 vs "
    "ANT4-8, cosine to float and nearest-neighbour agreement on a built-in sentence set. Writes "
    "ant.{json,md} and ant_types.png into --outdir."
)


def run_and_print(config: AntQuantConfig) -> dict:
    from frugal.scripts import report
    from frugal.scripts.systems.ant.experiment import run, tables, write_reports

    figures = run(config)
    for title, headers, rows in tables(figures):
        report.print_table(title, headers, rows)
    print(f"measured on {figures['machine_line']}")
    paths = write_reports(figures, config.outdir)
    print(f"report: {paths['markdown']}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The `tour` preset (MiniLM only) or `full` (ResNet and MiniLM); reports go to `outdir/ant`."""
    from frugal.scripts.systems.ant.experiment import markdown, run, write_reports
    from frugal.scripts.tour import TourSection

    config = PRESETS["tour" if quick else "full"]
    figures = run(config)
    paths = write_reports(figures, outdir / "ant")
    # The tour's report links plots relative to its own directory.
    plot_name = str(paths["plot"].relative_to(outdir)) if paths["plot"] else None
    summary = []
    shown = ("FP", "Int4", "ANT4", "ANT4-8")
    if "image" in figures:
        acc = figures["image"]["accuracy"]
        names = [v for v in shown if v in acc]
        col = "qat" if all(acc[v]["qat"] is not None for v in names) and config.qat_steps else "ptq"
        summary.append(
            (
                f"ResNet test acc % {' / '.join(names)} ({col.upper()})",
                " / ".join(f"{100 * acc[v][col]:.1f}" for v in names),
            )
        )
    if "text" in figures:
        scores = figures["text"]["scores"]
        names = [v for v in shown[1:] if v in scores]
        summary.append(
            (f"MiniLM cosine to FP {' / '.join(names)}", " / ".join(f"{scores[v]['mean_cosine']:.3f}" for v in names))
        )
    text = markdown(figures, None)
    if not config.image:
        text += (
            "\n\nThe tour runs the MiniLM part only; `frugal quant ant` adds the ResNet "
            "(FP / Int4 / IP-F / ANT4 / Int4-8 / ANT4-8, PTQ and QAT) and ANT4+OliVe."
        )
    return TourSection(
        title="ANT adaptive numeric types (quant ant)",
        figures=figures,
        markdown=text,
        summary=summary,
        plots=[plot_name] if plot_name else [],
    )


COMMANDS = [
    config_command(
        ("quant", "ant"),
        "ANT types on a ResNet (FP/Int4/IP-F/ANT4/ANT4-8, PTQ+QAT) and MiniLM (cosine, NN agreement)",
        AntQuantConfig,
        PRESETS,
        run_and_print,
        description=DESCRIPTION,
    )
]
