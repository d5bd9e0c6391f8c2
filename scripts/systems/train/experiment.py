"""Train an image classifier with the harness and report accuracy, time and checkpoint.

`run(config)` is shared by `frugal train` and the tour's first section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts import report
from frugal.scripts.systems.train.config import TrainConfig


def run(config: TrainConfig) -> dict:
    """Trains `config.model` on `config.dataset` (resuming from `config.workdir` if it holds a run)."""
    from frugal.models.registry import create_image_model
    from frugal.scripts.data import load_dataset
    from frugal.scripts.harness import FitConfig, data_parallel_mesh, fit_classifier

    machine_before = report.machine_description()
    mesh = data_parallel_mesh(config.devices)
    dataset = load_dataset(config.dataset, data_path=config.data_path, image_size=config.image_size, seed=config.seed)
    kwargs = {"activation": config.activation, "norm": config.norm}
    if config.width is not None:
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
        "machine": report.machine_record(machine_before),
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
