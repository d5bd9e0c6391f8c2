"""Settings of a block-reconstruction post-training quantization run (one source of truth).

Defaults follow QDrop's ImageNet recipe (1,024 calibration images, batch 32, 20,000 iterations per
block, drop p = 0.5, AdaRound regularizer 0.01 with beta 20 -> 2 after a 20 % warm-up, scale lr
4e-5); experiments override the fields they change explicitly with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from frugal.transforms.quant.aquant import GRANULARITIES
from frugal.transforms.quant.numerics import KINDS

METHODS = ("rtn", "qdrop", "aquant")


@dataclasses.dataclass(frozen=True)
class ReconConfig:
    """Settings of one post-training quantization run (defaults follow QDrop's ImageNet recipe)."""

    weight_bits: int = 4
    act_bits: int = 4
    first_last_bits: int | None = 8  # None: stem and classifier use weight_bits / act_bits
    kind: str = "int"  # ANT kind of the low-bit grids
    method: str = "qdrop"
    border_granularity: str = "channel_level"  # AQuant only
    calibration_size: int = 1024
    iterations: int = 20000  # per block
    batch_size: int = 32
    drop_prob: float = 0.5
    round_weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    weight_lr: float = 1e-3
    scale_lr: float = 4e-5
    border_lr: float = 1e-2
    border_temperature: float = 0.1
    chunk: int = 50  # iterations per logged history entry (and per progress-bar update)
    # Keep a block's reconstruction only if it lowers the block's error on the calibration set
    # below round-to-nearest's; otherwise that block stays at round-to-nearest.
    fallback_to_nearest: bool = True
    # QDrop-style runs AQuant's compiled program with the borders frozen at 0.5 (identical numbers, one
    # program for both methods); False gives it a border-free program of its own.
    shared_program: bool = True
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("weight_bits", "act_bits") + (("first_last_bits",) if self.first_last_bits is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int between 2 and 8, got {value!r}")
            if not 2 <= value <= 8:
                raise ValueError(f"{name}={value} is outside the supported range 2..8 bits")
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; choose one of {KINDS}")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; choose one of {METHODS}")
        if self.border_granularity not in GRANULARITIES:
            raise ValueError(f"border_granularity={self.border_granularity!r}; choose one of {GRANULARITIES}")
        for name in ("calibration_size", "iterations", "batch_size", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob={self.drop_prob} must be in [0, 1)")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup={self.warmup} must be in [0, 1)")
        for name in ("weight_lr", "scale_lr", "border_lr", "border_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
