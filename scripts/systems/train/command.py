"""`frugal train` and the tour's first section: train an image classifier with the harness
(data-parallel, checkpointed, resumable)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.train.config import PRESETS, TrainConfig

TOUR_ORDER = 10


def run_and_print(config: TrainConfig) -> dict:
    from frugal.scripts import report
    from frugal.scripts.systems.train.experiment import run

    before = report.machine_description()
    figures = run(config)
    report.print_table(
        f"{config.model} on {config.dataset}",
        ["metric", "value"],
        [
            ("test accuracy", figures["test_accuracy"]),
            ("train seconds", figures["train_seconds"]),
            ("resumed from step", figures["resumed_from_step"]),
            ("checkpoints", figures["checkpoint_dir"] or "(no --workdir)"),
            ("machine", report.machine_line(before)),
        ],
    )
    return figures


def tour_section(quick: bool, outdir: Path):
    """ResNet on the built-in digits: the `tour` preset (or `full`), checkpointed into the tour's folder."""
    import shutil

    from frugal.scripts.report import machine_description, machine_line, markdown_table
    from frugal.scripts.systems.train.experiment import plot_history, run
    from frugal.scripts.tour import TourSection

    # Only the checkpoint folder differs from the preset. A tour always trains from scratch: an old
    # checkpoint in the output folder would turn the run into a restore.
    config = dataclasses.replace(PRESETS["tour" if quick else "full"], workdir=str(outdir / "train_digits"))
    shutil.rmtree(config.workdir, ignore_errors=True)
    before = machine_description()
    figures = run(config)
    machine = machine_line(before)
    plot = plot_history(figures["history"], outdir / "train_digits.png", f"{config.model} on {config.dataset}")
    rows = [
        ("model", config.model),
        (
            "data",
            f"{config.dataset} {figures['dataset']['image_shape']}, "
            f"{figures['dataset']['train']} train / {figures['dataset']['test']} test",
        ),
        ("steps x batch", f"{config.steps} x {config.batch_size}"),
        ("test accuracy", f"{figures['test_accuracy']:.2%}"),
        ("train time", f"{figures['train_seconds']:.1f} s (incl. compile)"),
        ("checkpoints", figures["checkpoint_dir"]),
        ("machine", machine),
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


COMMANDS = [
    config_command(
        ("train",),
        "train a ResNet on built-in digits/shapes or your CIFAR-10/ImageNet folder; resumes from --workdir",
        TrainConfig,
        PRESETS,
        run_and_print,
    )
]
