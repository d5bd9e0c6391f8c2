"""Settings of the AQuant experiment: the float model, its data, and every reconstruction knob.

One flat config: the block-reconstruction fields (`iterations`, `calibration_size`, learning rates,
...) build the `frugal.transforms.quant.block_recon.ReconConfig` shared by every method (`recon`);
the experiment fills in only the bits, the method and the border granularity per run.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from frugal.scripts.configs import check_presets, knob
from frugal.transforms.quant.aquant import GRANULARITIES
from frugal.transforms.quant.block_recon import METHODS, ReconConfig

DATASETS = ("shapes", "digits", "cifar10", "imagefolder")
MODELS = ("cifar_resnet8", "cifar_resnet20", "cifar_resnet18", "resnet18", "resnet50")
# Every border granularity, the paper's coarse-grained channel x level form first (it wins ties).
AUTO_CANDIDATES = ("channel_level", "channel", "level", "tensor")
# `granularity auto` tries these by default: the two that won on validation at every setting of the
# 100-iteration run (README), so the seeded run spends one extra reconstruction per setting, not three.
DEFAULT_CANDIDATES = ("level", "tensor")
_SETTING = re.compile(r"W(\d+)A(\d+)")


def parse_setting(text: str) -> tuple[int, int]:
    """`"W2A4"` (any case) -> (2, 4): weight bits, activation bits."""
    match = _SETTING.fullmatch(text.strip().upper())
    if not match:
        raise ValueError(f"setting {text!r}: use the form W2A2 (weight bits, activation bits), e.g. W2A4")
    return int(match.group(1)), int(match.group(2))


def setting_name(weight_bits: int, act_bits: int) -> str:
    return f"W{weight_bits}A{act_bits}"


@dataclasses.dataclass(frozen=True)
class AQuantConfig:
    """The float models and data of the experiment, the W/A settings, methods and seeds, and the
    reconstruction recipe shared by every method (QDrop's, with the iteration count and learning
    rates a CPU budget forces: QDrop runs 20,000 iterations per block at weight lr 1e-3, scale lr
    4e-5; with 20x fewer iterations the AdaRound variables and LSQ scales need larger steps to
    settle: at 1,000 iterations weight lr 5e-2 leaves < 5% of a ResNet-8's rounding variables
    undecided per block, 1e-2 leaves up to 34%).

    Every (model, setting, method) runs once per seed in `seeds`: a new calibration subset and a new
    reconstruction batch order and dropping pattern; the float model and the test images stay."""

    dataset: Literal["shapes", "digits", "cifar10", "imagefolder"] = knob(
        "shapes", "built-in shapes or digits, or your cifar10 / imagefolder with --data-path"
    )
    data_path: str | None = knob(None, "your CIFAR-10 / image folder (nothing is downloaded)")
    n_train: int = knob(16000, "shapes training images (the validation images come out of these)")
    n_test: int = knob(10000, "shapes test images: many, so a point of accuracy is resolvable")
    validation_size: int = knob(2000, "training images held out (never trained or calibrated on) to pick knobs")
    image_size: int | None = knob(None, "image side (none: the dataset's own)")
    models: tuple[str, ...] = knob(
        ("cifar_resnet8", "cifar_resnet20"),
        "ResNets from frugal.models.resnet, each trained in float and quantized every way",
        choices=MODELS,
    )
    width: int = knob(16, "width of the cifar_* ResNets")
    fp_steps: int = knob(3000, "float training steps")
    fp_batch_size: int = knob(64, "float training batch size")
    fp_learning_rate: float = knob(3e-3, "float training peak learning rate")
    max_shift: int = knob(2, "random-translation augmentation of the float training (pixels)")
    settings: tuple[str, ...] = knob(("W2A2", "W3A3"), "W/A bit settings, e.g. W2A2 W2A4 W3A3 W4A4")
    methods: tuple[str, ...] = knob(METHODS, "PTQ methods", choices=METHODS)
    granularity: str = knob(
        "auto",
        "AQuant border granularity; auto runs every --candidates granularity at every setting with the first "
        "of --seeds and keeps the best on the validation images for every seed",
        choices=("auto", *GRANULARITIES),
    )
    candidates: tuple[str, ...] = knob(
        DEFAULT_CANDIDATES,
        "border granularities tried by --granularity auto (earlier wins ties; all four: channel_level channel "
        "level tensor)",
        choices=GRANULARITIES,
    )
    ablation: tuple[str, ...] = knob(
        (),
        "with a fixed --granularity: further granularities run at --ablation-setting (no value: none)",
        choices=GRANULARITIES,
        allow_empty=True,
    )
    ablation_setting: str = knob("W2A2", "the W/A setting of the ablation")
    first_last_bits: int | None = knob(8, "bits of the first and last layers (none: the setting's bits)")
    calibration_size: int = knob(1024, "calibration images, one seeded subset shared by every method")
    iterations: int = knob(
        1000, "reconstruction iterations per block (QDrop: 20,000; 1,000 at weight lr 5e-2 settle: < 5% undecided)"
    )
    recon_batch_size: int = knob(32, "reconstruction batch size")
    drop_prob: float = knob(0.5, "QDrop's activation dropping probability")
    weight_lr: float = knob(5e-2, "AdaRound variables' learning rate (QDrop: 1e-3 at 20,000 iterations)")
    scale_lr: float = knob(1e-3, "LSQ activation scales' learning rate (QDrop: 4e-5)")
    border_lr: float = knob(1e-2, "AQuant border logits' learning rate")
    fallback: bool = knob(True, "a block whose reconstruction does not beat round-to-nearest keeps round-to-nearest")
    seed: int = knob(0, "seed of the data and the float models")
    seeds: tuple[int, ...] = knob(
        (0, 1, 2), "seeds of the calibration subset and the reconstruction (batch order, dropping); one run each"
    )
    cache_dir: str | None = knob(
        "auto",
        "where trained float models and reconstructed blocks are kept, named by everything they depend on, "
        "so a rerun or a killed run resumes (auto: $XDG_CACHE_HOME/frugal/aquant or ~/.cache/frugal/aquant; "
        "none: nothing is kept)",
    )
    outdir: str = knob("reports/quant", "where aquant.{json,md,png} go")
    progress: bool = knob(True, "progress bars")

    def inactive_fields(self) -> dict[str, str]:
        """Fields these settings never read (`frugal.scripts.configs.check_inactive_flags`)."""
        inactive = {}
        if self.dataset != "shapes":
            inactive["n_train"] = inactive["n_test"] = f"with --dataset {self.dataset} (shapes only)"
        if not self.ablation or "aquant" not in self.methods:
            inactive["ablation_setting"] = "without an ablation (--ablation with AQuant among --methods)"
        return inactive

    def __post_init__(self):
        # "W2A2,W3A3" in one value is accepted too (the old comma form); names are stored upper-case.
        parts = tuple(p.strip().upper() for item in self.settings for p in str(item).split(",") if p.strip())
        object.__setattr__(self, "settings", parts)
        object.__setattr__(self, "ablation_setting", self.ablation_setting.strip().upper())
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r}; choose one of {DATASETS}")
        own = ("cifar10", "imagefolder")
        if self.data_path is not None and self.dataset not in own:
            raise ValueError(
                f"data_path={self.data_path!r} is given but dataset={self.dataset!r} is built in and reads no path; "
                "use --dataset cifar10 or imagefolder for your own data, or drop --data-path"
            )
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ValueError(f"models={self.models!r}; choose one or more ResNets of frugal.models.resnet: {MODELS}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models={self.models!r} names a model twice")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r} must be one or more distinct integers >= 0")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods={self.methods!r}; choose one or more of {METHODS}")
        if self.granularity != "auto" and self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r}; choose auto or one of {GRANULARITIES}")
        for name in ("candidates", "ablation"):
            unknown = [g for g in getattr(self, name) if g not in GRANULARITIES]
            if unknown:
                raise ValueError(f"{name} has unknown border granularity {unknown}; choose from {GRANULARITIES}")
        if self.granularity == "auto":
            if not self.candidates:
                raise ValueError("granularity=auto needs at least one candidate granularity in candidates")
            if self.ablation:
                raise ValueError(
                    "granularity=auto already runs every candidate at every setting; leave ablation empty "
                    "(--ablation with no value) or fix --granularity"
                )
            if self.validation_size < 1:
                raise ValueError(
                    f"granularity=auto picks on held-out validation images; validation_size={self.validation_size} "
                    "must be >= 1"
                )
        elif self.candidates != DEFAULT_CANDIDATES:
            raise ValueError(f"candidates go with granularity=auto, not granularity={self.granularity!r}")
        if not self.settings:
            raise ValueError("settings must list at least one W/A setting, e.g. W2A2")
        for text in (*self.settings, self.ablation_setting):
            for name, bits in zip(("weight bits", "activation bits"), parse_setting(text)):
                if not 2 <= bits <= 8:
                    raise ValueError(f"{name}={bits} in setting {text} is outside the supported range 2..8")
        for name in ("fp_steps", "fp_batch_size", "width", "n_train", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.validation_size < 0:
            raise ValueError(f"validation_size={self.validation_size} must be >= 0")
        if self.max_shift < 0:
            raise ValueError(f"max_shift={self.max_shift} must be >= 0")
        self.recon  # noqa: B018  (ReconConfig checks iterations, learning rates, bits)

    @property
    def setting_pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple(parse_setting(s) for s in self.settings)

    @property
    def granularity_candidates(self) -> tuple[str, ...]:
        """The granularities picked among on validation (empty for a fixed granularity)."""
        return self.candidates if self.granularity == "auto" else ()

    @property
    def recon(self) -> ReconConfig:
        """The reconstruction recipe every method shares (bits, method and border set per run)."""
        return ReconConfig(
            first_last_bits=self.first_last_bits,
            border_granularity="channel_level" if self.granularity == "auto" else self.granularity,
            calibration_size=self.calibration_size,
            iterations=self.iterations,
            batch_size=self.recon_batch_size,
            drop_prob=self.drop_prob,
            weight_lr=self.weight_lr,
            scale_lr=self.scale_lr,
            border_lr=self.border_lr,
            fallback_to_nearest=self.fallback,
            seed=self.seeds[0],
            progress=self.progress,
        )

    def cache_root(self):
        """The folder of cached float models and blocks (None: nothing is cached)."""
        from frugal.scripts.data import cache_folder

        return cache_folder(self.cache_dir, "aquant")


# The tour's section (about half a minute): a width-8 ResNet-8 on the 8x8 digits, W2A2, 30 iterations, one seed.
_TOUR = AQuantConfig(
    dataset="digits",
    models=("cifar_resnet8",),
    seeds=(0,),
    width=8,
    fp_steps=120,
    max_shift=0,
    validation_size=0,
    settings=("W2A2",),
    granularity="channel_level",
    calibration_size=64,
    iterations=30,
    recon_batch_size=16,
    progress=False,
)
PRESETS = check_presets(
    AQuantConfig,
    {
        # the tests' run (seconds): width 4, 30 float steps, 5 iterations per block
        "quick": dataclasses.replace(
            _TOUR,
            width=4,
            fp_steps=30,
            validation_size=200,
            calibration_size=32,
            iterations=5,
            recon_batch_size=8,
            seeds=(0, 1),
            cache_dir=None,
        ),
        "tour": _TOUR,
        "full": AQuantConfig(),
    },
)
