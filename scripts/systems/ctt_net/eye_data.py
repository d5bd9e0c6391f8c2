"""Two-view OCT eyes with pre- and post-operative visual acuity: the container every CTT-Net part shares.

Acuity is carried as *decimal* VA (Snellen fraction, 1.0 = 20/20), as in the CTT-Net reference code
(github.com/wjh892521292/Cataract_OCT): the model's output is bounded to (0, 1.5) and an operation
counts as effective when the decimal gain post - pre is at least 0.2. Cohort statistics in the
literature are logMAR (-log10 of decimal VA), so both conversions live here.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

GAIN_THRESHOLD = 0.2  # decimal VA gain that counts as an effective operation (reference code)
MAX_DECIMAL_VA = 1.5  # the reference bounds its output to sigmoid(.) * 1.5
MIN_DECIMAL_VA = 0.01  # counting fingers / hand motion / light perception map here (reference code)


def logmar_to_decimal(logmar) -> np.ndarray:
    """Decimal VA from logMAR, clipped to [0.01, 1.5] like the reference's labels."""
    return np.clip(10.0 ** (-np.asarray(logmar, dtype=np.float64)), MIN_DECIMAL_VA, MAX_DECIMAL_VA).astype(np.float32)


def decimal_to_logmar(decimal) -> np.ndarray:
    """logMAR from decimal VA (decimal must be > 0)."""
    decimal = np.asarray(decimal, dtype=np.float64)
    if np.any(~(decimal > 0)):
        raise ValueError("decimal VA must be > 0 to convert to logMAR")
    return (-np.log10(decimal)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class EyeSet:
    """n eyes, each with a horizontal and a vertical B-scan through the fovea and two acuities.

    horizontal, vertical: (n, H, W) float32 images (depth x lateral), roughly in [0, 1].
    pre_va, post_va: (n,) float32 decimal VA in [0.01, 1.5].
    eye_ids: (n,) unique strings. folds: (n,) int fold ids given by the source, or None (then the
    experiment assigns folds by eye). truth: per-eye arrays only a simulator knows (lesion damage
    per view, cataract density, ...), empty for real data.
    """

    horizontal: np.ndarray
    vertical: np.ndarray
    pre_va: np.ndarray
    post_va: np.ndarray
    eye_ids: np.ndarray
    folds: np.ndarray | None = None
    truth: dict = dataclasses.field(default_factory=dict)
    source: str = "unknown"

    def __post_init__(self):
        n = len(self.eye_ids)
        if n == 0:
            raise ValueError(f"EyeSet from {self.source}: no eyes")
        for name in ("horizontal", "vertical"):
            images = getattr(self, name)
            if images.ndim != 3 or len(images) != n:
                raise ValueError(f"EyeSet.{name} must be (n={n}, height, width), got {images.shape}")
        if self.horizontal.shape != self.vertical.shape:
            raise ValueError(
                f"horizontal {self.horizontal.shape} and vertical {self.vertical.shape} scans must have one shape"
            )
        for name in ("pre_va", "post_va"):
            va = getattr(self, name)
            if va.shape != (n,):
                raise ValueError(f"EyeSet.{name} must have shape ({n},), got {va.shape}")
            if not np.all((va >= MIN_DECIMAL_VA - 1e-6) & (va <= MAX_DECIMAL_VA + 1e-6)):
                raise ValueError(f"EyeSet.{name} must be decimal VA in [{MIN_DECIMAL_VA}, {MAX_DECIMAL_VA}]")
        if len(set(self.eye_ids.tolist())) != n:
            raise ValueError("EyeSet.eye_ids must be unique (one row per eye)")
        if self.folds is not None and self.folds.shape != (n,):
            raise ValueError(f"EyeSet.folds must have shape ({n},), got {self.folds.shape}")
        for key, value in self.truth.items():
            if len(value) != n:
                raise ValueError(f"EyeSet.truth[{key!r}] has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.eye_ids)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.horizontal.shape[1:])

    @property
    def gain(self) -> np.ndarray:
        return self.post_va - self.pre_va

    @property
    def effective(self) -> np.ndarray:
        """1 where the operation gained at least GAIN_THRESHOLD decimal VA."""
        return (self.gain >= GAIN_THRESHOLD).astype(np.float32)

    def subset(self, index) -> EyeSet:
        index = np.asarray(index)
        return EyeSet(
            self.horizontal[index],
            self.vertical[index],
            self.pre_va[index],
            self.post_va[index],
            self.eye_ids[index],
            None if self.folds is None else self.folds[index],
            {k: v[index] for k, v in self.truth.items()},
            self.source,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Writes an .npz (no pickled objects) atomically: a temporary file renamed into place."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "horizontal": self.horizontal,
            "vertical": self.vertical,
            "pre_va": self.pre_va,
            "post_va": self.post_va,
            "eye_ids": self.eye_ids.astype(str),
            "source": np.asarray(self.source),
            **({"folds": self.folds} if self.folds is not None else {}),
            **{f"truth.{k}": v for k, v in self.truth.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EyeSet:
        with np.load(Path(path), allow_pickle=False) as data:
            truth = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("truth.")}
            return cls(
                data["horizontal"],
                data["vertical"],
                data["pre_va"],
                data["post_va"],
                data["eye_ids"],
                data["folds"] if "folds" in data.files else None,
                truth,
                str(data["source"]),
            )


def assign_folds(eyes: EyeSet, num_folds: int, seed: int) -> np.ndarray:
    """Fold id per eye: the source's own folds when it has them, else a seeded split stratified by
    the effective-operation label (so every fold holds both classes)."""
    if num_folds < 2:
        raise ValueError(f"num_folds={num_folds} must be >= 2")
    if eyes.folds is not None:
        found = np.unique(eyes.folds)
        if len(found) != num_folds:
            raise ValueError(f"the data defines {len(found)} folds {found.tolist()}, but num_folds={num_folds}")
        return np.searchsorted(found, eyes.folds).astype(np.int32)
    if len(eyes) < num_folds:
        raise ValueError(f"{len(eyes)} eyes cannot fill num_folds={num_folds}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(eyes), np.int32)
    for label in (0.0, 1.0):
        idx = np.flatnonzero(eyes.effective == label)
        idx = idx[rng.permutation(len(idx))]
        folds[idx] = (np.arange(len(idx)) + rng.integers(num_folds)) % num_folds
    return folds
