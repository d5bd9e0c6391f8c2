"""frugal quant aquant: learned activation rounding borders on block-reconstruction PTQ."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("quant", "aquant")
HELP = "AQuant vs QDrop-style vs round-to-nearest PTQ on a ResNet (W2A2, W2A4, W3A3, W4A4)"
DESCRIPTION = (
    "Trains a float CIFAR-style ResNet on the built-in shapes set (or --dataset cifar10/imagefolder "
    "with --data-path), then post-training quantizes it with round-to-nearest, QDrop-style block "
    "reconstruction (AdaRound weights, LSQ activation scales, drop p=0.5) and AQuant (the same plus "
    "learned rounding borders: per channel x level, channel, level or tensor, the granularity picked per "
    "setting on held-out validation images), all from the same calibration images and iterations, "
    "first/last layers 8-bit. Prints the accuracy table with the papers' ResNet-18 ImageNet numbers "
    "beside ours, every border granularity's accuracy and the per-block reconstruction errors. Writes "
    "reports/quant/aquant.{json,md,png}. --quick runs the tour's half-minute version."
)
TOUR_ORDER = 35


def _settings(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split(","):
        item = item.strip().upper()
        if not item.startswith("W") or "A" not in item:
            raise ValueError(f"--settings item {item!r}: use the form W2A2,W3A3")
        w, a = item[1:].split("A", 1)
        try:
            out.append((int(w), int(a)))
        except ValueError:
            raise ValueError(f"--settings item {item!r}: bit widths must be integers, e.g. W2A4") from None
    return tuple(out)


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip().lower() for m in text.split(",") if m.strip())


def add_arguments(parser) -> None:
    from frugal.scripts.aquant_experiments import AQuantExperimentConfig

    d = AQuantExperimentConfig()
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the tour's run (about half a minute): a width-8 ResNet-8 on the 8x8 digits, W2A2, "
        "64 calibration images, 30 iterations per block, no ablation",
    )
    parser.add_argument("--dataset", default=None, help="shapes | digits | cifar10 | imagefolder (default shapes)")
    parser.add_argument("--data-path", default=None, help="your CIFAR-10 / image folder (nothing is downloaded)")
    parser.add_argument("--model", default=None, help=f"cifar_resnet8 | cifar_resnet20 | ... (default {d.model})")
    parser.add_argument("--width", type=int, default=None, help=f"width of the cifar_* ResNets (default {d.width})")
    parser.add_argument(
        "--fp-steps", type=int, default=None, help=f"float training steps (default {d.fp_steps}; quick 120)"
    )
    parser.add_argument("--n-test", type=int, default=None, help=f"shapes test images (default {d.n_test})")
    parser.add_argument(
        "--validation-size",
        type=int,
        default=None,
        help=f"training images held out for knob selection (default {d.validation_size})",
    )
    parser.add_argument(
        "--settings",
        type=_settings,
        default=None,
        help="comma-separated W/A pairs (default W2A2,W2A4,W3A3,W4A4; quick W2A2,W3A3)",
    )
    parser.add_argument(
        "--methods",
        type=_methods,
        default=None,
        help="comma-separated methods among rtn,qdrop,aquant (default all three)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help=f"reconstruction iterations per block (default {d.recon.iterations})",
    )
    parser.add_argument(
        "--calibration-size", type=int, default=None, help=f"calibration images (default {d.recon.calibration_size})"
    )
    parser.add_argument(
        "--granularity",
        default=None,
        help="AQuant border granularity: auto (default; every candidate at every setting, the "
        "best on the validation images is reported) | channel_level | channel | level | "
        "tensor (quick: channel_level)",
    )
    parser.add_argument(
        "--candidates",
        default=None,
        help="with --granularity auto: comma list of candidate granularities (default "
        "channel_level,channel,level,tensor)",
    )
    parser.add_argument(
        "--no-ablation", action="store_true", help="with a fixed --granularity: skip the other granularities at W2A2"
    )
    parser.add_argument(
        "--first-last-bits",
        type=int,
        default=None,
        help=f"bits of the first and last layers (default {d.recon.first_last_bits})",
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="keep every block's reconstruction even when it does not beat round-to-nearest",
    )
    parser.add_argument(
        "--fp-cache",
        default=None,
        help="a .npz that stores the trained float model; reused when it was trained with the "
        "same recipe (dataset, sizes, model, width, steps, seed), written otherwise",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, float model and reconstruction")
    parser.add_argument("--outdir", default="reports/quant", help="where reports go (default reports/quant)")


# The paper's coarse-grained form first, so it wins ties.
AUTO_CANDIDATES = ("channel_level", "channel", "level", "tensor")


def _config(args):
    import dataclasses

    from frugal.scripts.aquant_experiments import AQuantExperimentConfig

    base = tour_config(Path(args.outdir), nested=False) if args.quick else AQuantExperimentConfig(outdir=args.outdir)
    overrides = {"data_path": args.data_path, "seed": args.seed, "fp_cache": args.fp_cache, "progress": True}
    for field, value in (
        ("dataset", args.dataset),
        ("model", args.model),
        ("width", args.width),
        ("fp_steps", args.fp_steps),
        ("settings", args.settings),
        ("methods", args.methods),
        ("n_test", args.n_test),
        ("validation_size", args.validation_size),
    ):
        if value is not None:
            overrides[field] = value
    if args.no_ablation:
        overrides["ablation"] = ()
    granularity = args.granularity or (None if args.quick else "auto")
    if args.candidates is not None and granularity != "auto":
        raise ValueError("--candidates goes with --granularity auto")
    if granularity == "auto":
        overrides["granularity_candidates"] = (
            tuple(g.strip() for g in args.candidates.split(",") if g.strip()) if args.candidates else AUTO_CANDIDATES
        )
        overrides["ablation"] = ()  # the candidates at every setting are the ablation
        granularity = None
    recon = {"seed": args.seed, "progress": True}
    for field, value in (
        ("iterations", args.iterations),
        ("calibration_size", args.calibration_size),
        ("border_granularity", granularity),
        ("first_last_bits", args.first_last_bits),
    ):
        if value is not None:
            recon[field] = value
    if args.no_fallback:
        recon["fallback_to_nearest"] = False
    overrides["recon"] = dataclasses.replace(base.recon, **recon)
    return dataclasses.replace(base, **overrides)


def run_command(args) -> dict:
    from frugal.scripts import report
    from frugal.scripts.aquant_experiments import run, tables

    figures = run(_config(args))
    for title, headers, rows in tables(figures):
        report.print_table(title, headers, rows)
    print(f"report: {Path(args.outdir) / 'aquant.md'}")
    return figures


def small_config(outdir):
    """The tour's --full run (minutes): the shapes set, W2A2 and W3A3, 200 iterations per block."""
    import dataclasses

    from frugal.scripts.aquant_experiments import EXPERIMENT_RECON, AQuantExperimentConfig

    return AQuantExperimentConfig(
        n_train=4500,
        n_test=1000,
        validation_size=500,
        fp_steps=500,
        recon=dataclasses.replace(EXPERIMENT_RECON, calibration_size=256, iterations=200),
        settings=((2, 2), (3, 3)),
        ablation=(),
        outdir=str(outdir),
    )


def tour_config(outdir: Path, nested: bool = True):
    """The tour's <= 35 s section (and --quick): a width-8 ResNet-8 on the 8x8 digits, W2A2, 30
    iterations per block; reports go to `outdir`/quant_aquant (nested) or `outdir`."""
    import dataclasses

    from frugal.scripts.aquant_experiments import EXPERIMENT_RECON, AQuantExperimentConfig

    return AQuantExperimentConfig(
        dataset="digits",
        width=8,
        fp_steps=120,
        max_shift=0,
        validation_size=0,
        recon=dataclasses.replace(EXPERIMENT_RECON, calibration_size=64, iterations=30, batch_size=16, progress=False),
        settings=((2, 2),),
        ablation=(),
        outdir=str(outdir / "quant_aquant" if nested else outdir),
        progress=False,
    )


def tour_section(quick: bool, outdir: Path):
    from frugal.scripts.aquant_experiments import markdown, run
    from frugal.scripts.tour import TourSection

    config = tour_config(outdir) if quick else small_config(outdir / "quant_aquant")
    figures = run(config)
    summary = []
    for name, accs in figures["accuracy"].items():
        summary.append(
            (
                f"{name} top-1 % FP / RTN / QDrop-style / AQuant",
                " / ".join(
                    f"{100 * v:.1f}" for v in (figures["fp_accuracy"], accs["rtn"], accs["qdrop"], accs["aquant"])
                ),
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
