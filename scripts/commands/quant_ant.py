"""frugal quant ant: ANT numeric types on a whole ResNet and on the pretrained MiniLM."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("quant", "ant")
HELP = "ANT types on a ResNet (FP/Int4/IP-F/ANT4/ANT4-8, PTQ+QAT) and MiniLM (cosine, NN agreement)"
DESCRIPTION = (
    "Quantizes whole models with ANT adaptive numeric types (int/PoT/flint/float chosen per tensor "
    "by MSE) through regex rules over qwix interception. ResNet: a float model trained on built-in "
    "images (or --dataset cifar10/imagefolder with --data-path), then W4A4 Int4, IP-F, ANT4 and "
    "ANT4-8 after PTQ and after QAT, the paper's ResNet-18 ImageNet numbers beside. MiniLM: the "
    "real all-MiniLM-L6-v2, float vs Int4 vs ANT4 vs ANT4-8, cosine to float and nearest-neighbour "
    "agreement on a built-in sentence set. Writes reports/quant/ant.{json,md} and ant_types.png."
)
TOUR_ORDER = 30


def add_arguments(parser) -> None:
    parser.add_argument(
        "--part",
        choices=("both", "image", "text"),
        default="both",
        help="run the ResNet part, the MiniLM part, or both (default)",
    )
    parser.add_argument("--dataset", default="digits", help="digits | shapes | cifar10 | imagefolder (default digits)")
    parser.add_argument("--data-path", default=None, help="your CIFAR-10 / image folder (nothing is downloaded)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="image size for digits/shapes/imagefolder (default 32: digits upsampled)",
    )
    parser.add_argument("--model", default="cifar_resnet8", help="image model name (default cifar_resnet8)")
    parser.add_argument("--width", type=int, default=16, help="width of the cifar_* ResNets (default 16)")
    parser.add_argument("--fp-steps", type=int, default=600, help="float training steps (default 600)")
    parser.add_argument("--qat-steps", type=int, default=200, help="QAT fine-tuning steps, 0 = PTQ only (default 200)")
    parser.add_argument("--qat-lr", type=float, default=5e-4, help="QAT learning rate (default 5e-4)")
    parser.add_argument(
        "--alpha-step", type=float, default=0.01, help="clip sweep step as a fraction of max|x| (paper: 0.01)"
    )
    parser.add_argument(
        "--extra-8bit",
        type=int,
        default=4,
        help="MiniLM ANT4-8: layers promoted by MSE besides the last two (default 4)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["Int4", "IP-F", "ANT4", "Int4-8", "ANT4-8", "ANT4+OliVe"],
        metavar="NAME",
        help="quantized variants to run: Int4 IP-F ANT4 Int4-8 ANT4-8 ANT4+OliVe "
        "(default all; IP-F is ResNet only, ANT4+OliVe MiniLM only)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outdir", default="reports/quant", help="where reports go (default reports/quant)")


def _config(args):
    from frugal.scripts.ant_experiments import AntExperimentConfig

    return AntExperimentConfig(
        dataset=args.dataset,
        data_path=args.data_path,
        image_size=args.image_size,
        model=args.model,
        width=args.width,
        fp_steps=args.fp_steps,
        qat_steps=args.qat_steps,
        qat_learning_rate=args.qat_lr,
        text_extra_high_layers=args.extra_8bit,
        variants=tuple(args.variants),
        alpha_step=args.alpha_step,
        seed=args.seed,
        image=args.part in ("both", "image"),
        text=args.part in ("both", "text"),
        outdir=args.outdir,
        progress=True,
    )


def run_command(args) -> dict:
    from frugal.scripts import report
    from frugal.scripts.ant_experiments import run, tables

    figures = run(_config(args))
    for title, headers, rows in tables(figures):
        report.print_table(title, headers, rows)
    print(f"report: {Path(args.outdir) / 'ant.md'}")
    return figures


def quick_config(outdir: Path):
    """The tour's setting: the MiniLM part on 24 sentences with a coarse alpha sweep.

    The ResNet part needs a float model trained on 32x32 images before activation tails (and so
    ANT's advantage) appear, which does not fit the tour's budget; `frugal quant ant` runs it.
    """
    from frugal.scripts.ant_experiments import AntExperimentConfig

    return AntExperimentConfig(
        image=False,
        alpha_step=0.1,
        sentences_per_topic=3,
        variants=("Int4", "ANT4", "ANT4-8"),
        outdir=str(outdir / "quant_ant"),
    )


def tour_section(quick: bool, outdir: Path):
    from frugal.scripts.ant_experiments import AntExperimentConfig, markdown, run
    from frugal.scripts.tour import TourSection

    config = quick_config(outdir) if quick else AntExperimentConfig(outdir=str(outdir / "quant_ant"))
    figures = run(config)
    plot_name = None
    if figures.get("plot"):
        # The tour's report links plots relative to its own directory.
        plot_name = str(Path(figures["plot"]).relative_to(outdir))
    summary = []
    shown = [v for v in ("FP", "Int4", "ANT4", "ANT4-8")]
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
    if quick:
        text += (
            "\n\nQuick mode runs the MiniLM part only; `frugal quant ant` adds the ResNet "
            "(FP / Int4 / IP-F / ANT4 / Int4-8 / ANT4-8, PTQ and QAT) and ANT4+OliVe."
        )
    return TourSection(
        title="ANT adaptive numeric types (quant ant)",
        figures=figures,
        markdown=text,
        summary=summary,
        plots=[plot_name] if plot_name else [],
    )
