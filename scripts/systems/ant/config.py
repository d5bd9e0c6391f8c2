"""Settings of `frugal quant ant` (flags derived from these fields by `frugal.scripts.configs`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from frugal.models.registry import IMAGE_MODELS
from frugal.scripts.configs import check_presets, knob
from frugal.scripts.data import DATASETS, USER_DATASETS, check_data_path

IMAGE_VARIANTS = ("Int4", "IP-F", "ANT4", "Int4-8", "ANT4-8")
# Beyond the paper: OliVe's outlier-victim pair type (ISCA'23) as one more candidate, for transformers.
TEXT_VARIANTS = ("Int4", "ANT4", "ANT4+OliVe", "Int4-8", "ANT4-8")
ALL_VARIANTS = IMAGE_VARIANTS + ("ANT4+OliVe",)


# Fields only one part reads.
IMAGE_ONLY = (
    "dataset",
    "data_path",
    "image_size",
    "model",
    "width",
    "fp_steps",
    "fp_learning_rate",
    "qat_steps",
    "qat_learning_rate",
    "batch_size",
    "calibration_batches",
)
TEXT_ONLY = ("text_extra_high_layers", "sentences_per_topic")


@dataclasses.dataclass(frozen=True)
class AntQuantConfig:
    """The ResNet part (float training, PTQ, QAT) and the MiniLM part (PTQ), and what both share."""

    part: Literal["both", "image", "text"] = knob("both", "run the ResNet part, the MiniLM part, or both")
    # ResNet part
    dataset: str = knob("digits", f"one of {list(DATASETS)} ({', '.join(USER_DATASETS)} need --data-path)")
    data_path: str | None = knob(None, "your CIFAR-10 / image folder (nothing is downloaded)")
    image_size: int | None = knob(
        32, "image size for digits/shapes/imagefolder (32: digits upsampled, so activations have tails)"
    )
    model: str = knob("cifar_resnet8", f"image model, one of {sorted(IMAGE_MODELS)}")
    width: int = knob(16, "width of the cifar_* ResNets")
    fp_steps: int = knob(600, "float training steps")
    fp_learning_rate: float = knob(3e-3, "float training learning rate", flag="fp-lr")
    qat_steps: int = knob(200, "QAT fine-tuning steps (0: PTQ only)")
    qat_learning_rate: float = knob(5e-4, "QAT learning rate", flag="qat-lr")
    batch_size: int = knob(64, "training and calibration batch size")
    calibration_batches: int = knob(2, "training batches the types and clip values are chosen on")
    # MiniLM part
    text_extra_high_layers: int = knob(
        4, "MiniLM ANT4-8: layers promoted to 8-bit by MSE besides the last two", flag="extra-8bit"
    )
    sentences_per_topic: int = knob(6, "sentences per topic of the built-in set (8 topics, 2..6 each)")
    # both
    variants: tuple[str, ...] = knob(
        ALL_VARIANTS,
        "quantized variants (FP always runs; IP-F is ResNet only, ANT4+OliVe MiniLM only)",
        choices=ALL_VARIANTS,
    )
    alpha_step: float = knob(0.01, "clip sweep step as a fraction of max|x| (paper: 0.01)")
    seed: int = knob(0, "random seed of the model, the data and the calibration batches")
    outdir: str = knob("reports/quant", "where ant.{json,md} and ant_types.png go")
    progress: bool = knob(True, "show training progress bars")

    def __post_init__(self):
        if self.part not in ("both", "image", "text"):
            raise ValueError(f"part={self.part!r} must be 'both', 'image' or 'text'")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not known; choose one of {list(DATASETS)}")
        if self.image:
            check_data_path(self.dataset, self.data_path)
        elif self.data_path is not None:
            raise ValueError(f"data_path={self.data_path!r} is given but part={self.part!r} trains no image model")
        if self.model not in IMAGE_MODELS:
            raise ValueError(f"model={self.model!r} is not known; choose one of {sorted(IMAGE_MODELS)}")
        for name in ("width", "fp_steps", "batch_size", "calibration_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size={self.image_size} must be >= 1 (or none)")
        if not 2 <= self.sentences_per_topic <= 6:
            raise ValueError(f"sentences_per_topic={self.sentences_per_topic} must be in 2..6")
        if self.qat_steps < 0 or self.text_extra_high_layers < 0:
            raise ValueError(
                f"qat_steps={self.qat_steps} and text_extra_high_layers={self.text_extra_high_layers} must be >= 0"
            )
        if not (self.fp_learning_rate > 0 and self.qat_learning_rate > 0):
            raise ValueError(
                f"fp_learning_rate={self.fp_learning_rate} and qat_learning_rate={self.qat_learning_rate} must be > 0"
            )
        object.__setattr__(self, "variants", tuple(self.variants))
        unknown = set(self.variants) - set(ALL_VARIANTS)
        if unknown or not self.variants:
            raise ValueError(
                f"variants={list(self.variants)}: {sorted(unknown) or 'none given'} not allowed; "
                f"choose from {list(ALL_VARIANTS)}"
            )
        if not 0 < self.alpha_step <= 0.25:
            raise ValueError(f"alpha_step={self.alpha_step} must be in (0, 0.25]")

    @property
    def image(self) -> bool:
        """Whether the ResNet part runs."""
        return self.part in ("both", "image")

    @property
    def text(self) -> bool:
        """Whether the MiniLM part runs."""
        return self.part in ("both", "text")

    def inactive_fields(self) -> dict[str, str]:
        """Fields of the part that does not run (`frugal.scripts.configs.check_inactive_flags`)."""
        if not self.image:
            return {name: "with --part text (the ResNet part does not run)" for name in IMAGE_ONLY}
        if not self.text:
            return {name: "with --part image (the MiniLM part does not run)" for name in TEXT_ONLY}
        return {}


PRESETS = check_presets(
    AntQuantConfig,
    {
        # the tests' size: MiniLM on 16 sentences, the coarsest clip sweep, three variants
        "quick": AntQuantConfig(
            part="text",
            sentences_per_topic=2,
            alpha_step=0.25,
            text_extra_high_layers=2,
            variants=("Int4", "ANT4", "ANT4-8"),
            progress=False,
        ),
        # the tour's section: MiniLM on 24 sentences with a coarse clip sweep. The ResNet part needs a
        # float model trained on 32x32 images before activation tails (and so ANT's advantage) appear,
        # which does not fit the tour's budget; `frugal quant ant` runs it.
        "tour": AntQuantConfig(
            part="text", alpha_step=0.1, sentences_per_topic=3, variants=("Int4", "ANT4", "ANT4-8"), progress=False
        ),
        # both parts at the paper's clip step
        "full": AntQuantConfig(),
    },
)
