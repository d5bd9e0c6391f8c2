"""Experiment: train an image classifier with the harness and report accuracy, time, checkpoint.

`run(config)` is shared by `frugal train` and the tour's first section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts import report


@dataclasses.dataclass(frozen=True)
class ImageTrainingConfig:
    model: str = "cifar_resnet20"
    dataset: str = "digits"
    data_path: str | None = None
    image_size: int | None = None
    activation: str = "relu"
    norm: str = "batch"
    width: int | None = None
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    devices: int = 1
    workdir: str | None = None
    checkpoint_every: int = 0
    max_shift: int = 0
    progress: bool = True


def run(config: ImageTrainingConfig) -> dict:
    from frugal.models.registry import create_image_model
    from frugal.scripts.data import load_dataset
    from frugal.scripts.harness import FitConfig, data_parallel_mesh, fit_classifier

    mesh = data_parallel_mesh(config.devices)
    if config.batch_size % config.devices:
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by the {config.devices} devices; "
            f"use a multiple of {config.devices}"
        )
    dataset = load_dataset(config.dataset, data_path=config.data_path, image_size=config.image_size, seed=config.seed)
    kwargs = {"activation": config.activation, "norm": config.norm}
    if config.width is not None:
        if not config.model.startswith("cifar_"):
            raise ValueError(f"--width applies to the cifar_* models, not {config.model!r}")
        kwargs["width"] = config.width
    model = create_image_model(
        config.model, num_classes=dataset.num_classes, in_channels=dataset.image_shape[-1], seed=config.seed, **kwargs
    )
    fit = FitConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
        max_shift=config.max_shift,
        progress=config.progress,
    )
    result = fit_classifier(model, dataset, fit, mesh=mesh, workdir=config.workdir)
    return {
        "config": dataclasses.asdict(config),
        "dataset": {
            "name": dataset.name,
            "train": len(dataset.train_x),
            "test": len(dataset.test_x),
            "image_shape": dataset.image_shape,
            "classes": dataset.num_classes,
        },
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "final_train_loss": result.train_loss,
        "train_seconds": result.seconds,
        "resumed_from_step": result.resumed_from,
        "checkpoint_dir": str(result.checkpoint_dir) if result.checkpoint_dir else None,
        "history": result.history,
        "machine": report.machine_description(),
    }


def plot_history(history: list[dict], path: Path, title: str) -> Path:
    fig, ax = report.new_figure(figsize=(5, 3))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="train loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["accuracy"] for h in history], color="tab:orange", label="train accuracy")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2.set_ylabel("accuracy")
    ax.set_title(title)
    return report.save_figure(fig, path)
