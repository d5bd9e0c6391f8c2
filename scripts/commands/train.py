"""frugal train: train an image classifier with the harness (data-parallel, checkpointed, resumable)."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("train",)
HELP = "train a ResNet on built-in digits/shapes or your CIFAR-10/ImageNet folder; resumes from --workdir"
TOUR_ORDER = 10


def add_arguments(parser) -> None:
    from frugal.models.layers import ACTIVATIONS, NORMS
    from frugal.models.registry import IMAGE_MODELS
    from frugal.scripts.data import DATASETS

    parser.add_argument("--model", default="cifar_resnet20", help=f"one of {sorted(IMAGE_MODELS)}")
    parser.add_argument("--dataset", default="digits", help=f"one of {list(DATASETS)}")
    parser.add_argument("--data-path", default=None, help="folder of your CIFAR-10 binaries or image folders")
    parser.add_argument("--image-size", type=int, default=None, help="resize images to this size")
    parser.add_argument("--activation", default="relu", help=f"one of {sorted(ACTIVATIONS)}")
    parser.add_argument("--norm", default="batch", help=f"one of {list(NORMS)}")
    parser.add_argument("--width", type=int, default=None, help="base width of cifar_* models")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, warmup + cosine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=int, default=1, help="data-parallel over this many local devices")
    parser.add_argument("--workdir", default=None, help="checkpoints + metrics.jsonl; an existing one is resumed")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: at the end)")
    parser.add_argument("--max-shift", type=int, default=0, help="random-translation augmentation in pixels")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_command(args) -> dict:
    from frugal.scripts import report
    from frugal.scripts.image_training import ImageTrainingConfig, run

    config = ImageTrainingConfig(
        model=args.model,
        dataset=args.dataset,
        data_path=args.data_path,
        image_size=args.image_size,
        activation=args.activation,
        norm=args.norm,
        width=args.width,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        devices=args.devices,
        workdir=args.workdir,
        checkpoint_every=args.checkpoint_every,
        max_shift=args.max_shift,
        progress=not args.no_progress,
    )
    figures = run(config)
    report.print_table(
        f"{config.model} on {config.dataset}",
        ["metric", "value"],
        [
            ("test accuracy", figures["test_accuracy"]),
            ("train seconds", figures["train_seconds"]),
            ("resumed from step", figures["resumed_from_step"]),
            ("checkpoints", figures["checkpoint_dir"] or "(no --workdir)"),
        ],
    )
    return figures


def tour_section(quick: bool, outdir: Path):
    from frugal.scripts.image_training import ImageTrainingConfig, plot_history, run
    from frugal.scripts.tour import TourSection

    if quick:
        config = ImageTrainingConfig(
            model="cifar_resnet8",
            dataset="digits",
            steps=400,
            batch_size=64,
            workdir=str(outdir / "train_digits"),
            checkpoint_every=200,
        )
    else:
        config = ImageTrainingConfig(
            model="cifar_resnet20",
            dataset="digits",
            image_size=32,
            steps=1500,
            batch_size=64,
            max_shift=2,
            workdir=str(outdir / "train_digits"),
            checkpoint_every=500,
        )
    # A tour always trains from scratch: an old checkpoint in the output folder would short-circuit it.
    import shutil

    shutil.rmtree(config.workdir, ignore_errors=True)
    figures = run(config)
    plot = plot_history(figures["history"], outdir / "train_digits.png", f"{config.model} on digits")
    from frugal.scripts.report import markdown_table

    rows = [
        ("model", config.model),
        (
            "data",
            f"digits {figures['dataset']['image_shape']}, "
            f"{figures['dataset']['train']} train / {figures['dataset']['test']} test",
        ),
        ("steps x batch", f"{config.steps} x {config.batch_size}"),
        ("test accuracy", f"{figures['test_accuracy']:.2%}"),
        ("train time", f"{figures['train_seconds']:.1f} s (incl. compile)"),
        ("checkpoints", figures["checkpoint_dir"]),
    ]
    markdown = (
        "Trains a ResNet with the shared harness (jit train step, AdamW, orbax checkpoints) on "
        "scikit-learn's bundled handwritten digits.\n\n" + markdown_table(["", ""], rows)
    )
    return TourSection(
        title="ResNet on the built-in digits (foundation harness)",
        figures=figures,
        markdown=markdown,
        summary=[
            ("test accuracy", f"{figures['test_accuracy']:.2%}"),
            ("train time", f"{figures['train_seconds']:.1f} s"),
            ("checkpoint", figures["checkpoint_dir"]),
        ],
        plots=[plot.name],
    )
