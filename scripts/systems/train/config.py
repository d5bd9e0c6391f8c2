"""Settings of `frugal train` (flags derived from these fields by `frugal.scripts.configs`)."""

from __future__ import annotations

import dataclasses

from frugal.models.layers import ACTIVATIONS, NORMS
from frugal.models.registry import IMAGE_MODELS
from frugal.scripts.configs import check_presets, knob
from frugal.scripts.data import DATASETS, USER_DATASETS, check_data_path

# Datasets that live on the user's disk (nothing is downloaded).


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One image-classifier training run: model, data, optimisation, devices and checkpoints."""

    model: str = knob("cifar_resnet20", f"image model, one of {sorted(IMAGE_MODELS)}")
    dataset: str = knob("digits", f"one of {list(DATASETS)} ({', '.join(USER_DATASETS)} need --data-path)")
    data_path: str | None = knob(None, "folder of your CIFAR-10 binaries or image folders")
    image_size: int | None = knob(None, "resize images to this size (none: the dataset's own)")
    activation: str = knob("relu", f"one of {sorted(ACTIVATIONS)}")
    norm: str = knob("batch", f"one of {list(NORMS)}")
    width: int | None = knob(None, "base width of the cifar_* models (none: the model's default)")
    steps: int = knob(600, "training steps")
    batch_size: int = knob(64, "global batch size (a multiple of --devices)")
    learning_rate: float = knob(3e-3, "peak learning rate (AdamW, warmup + cosine)", flag="lr")
    seed: int = knob(0, "random seed of the model, the data order and the split")
    devices: int = knob(1, "data-parallel over this many local devices")
    workdir: str | None = knob(None, "checkpoints + metrics.jsonl; an existing one is resumed")
    checkpoint_every: int = knob(0, "steps between checkpoints (0: at the end)")
    max_shift: int = knob(0, "random-translation augmentation in pixels")
    progress: bool = knob(True, "show the progress bar")

    def inactive_fields(self) -> dict[str, str]:
        """Fields these settings never read (`frugal.scripts.configs.check_inactive_flags`)."""
        return {"checkpoint_every": "without --workdir (no checkpoints are written)"} if self.workdir is None else {}

    def __post_init__(self):
        if self.model not in IMAGE_MODELS:
            raise ValueError(f"model={self.model!r} is not known; choose one of {sorted(IMAGE_MODELS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not known; choose one of {sorted(ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not known; choose one of {list(NORMS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not known; choose one of {list(DATASETS)}")
        check_data_path(self.dataset, self.data_path)
        if self.width is not None:
            if not self.model.startswith("cifar_"):
                raise ValueError(f"width={self.width} applies to the cifar_* models, not model={self.model!r}")
            if self.width < 1:
                raise ValueError(f"width={self.width} must be >= 1")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size={self.image_size} must be >= 1 (or none)")
        if self.steps < 0:
            raise ValueError(f"steps={self.steps} must be >= 0")
        if self.batch_size < 1 or self.devices < 1:
            raise ValueError(f"batch_size={self.batch_size} and devices={self.devices} must be >= 1")
        if self.batch_size % self.devices:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by the {self.devices} devices; "
                f"use a multiple of {self.devices}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        if self.checkpoint_every < 0 or self.max_shift < 0:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} and max_shift={self.max_shift} must be >= 0")


PRESETS = check_presets(
    TrainConfig,
    {
        # the tests' size: a thin ResNet-8, a few steps
        "quick": TrainConfig(model="cifar_resnet8", width=4, steps=2, batch_size=16, progress=False),
        # the tour's section: ResNet-8 on the 8x8 digits, checkpointed half way
        "tour": TrainConfig(model="cifar_resnet8", steps=250, batch_size=64, checkpoint_every=125),
        # the command's default
        "full": TrainConfig(),
    },
)
