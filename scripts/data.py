"""Image data: built-in sets that ship offline, loaders for the public sets a user brings, batching.

Built-in:
- `load_digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes),
  optionally resized to 32x32; a fixed stratified 80/20 split.
- `make_shapes_dataset`: a seeded, procedurally generated 32x32 RGB set of ten textured shapes on
  cluttered backgrounds, harder than digits, for experiments (quantization, attention) where digits
  saturates.
User-supplied (never downloaded): `load_cifar10` (the official binary files) and `load_image_folder`
(ImageNet-style `train/<class>/*.jpg`, `val/<class>/*.jpg`).

Every loader returns an `ImageDataset` of NHWC float32 arrays standardized with the training set's
per-channel mean and std. `BatchSampler` turns a step number into example indices deterministically
(epoch-seeded permutations), which is what makes a resumed run see exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    name: str
    train_x: np.ndarray  # (n, h, w, c) float32, standardized
    train_y: np.ndarray  # (n,) int32
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{split}_x must be (n, h, w, c) and {split}_y (n,), got {x.shape} and {y.shape}")
            if len(x) == 0:
                raise ValueError(f"the {split} split of dataset {self.name!r} is empty")


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=(0, 1, 2), keepdims=True)
    std = train.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of NHWC float images (antialiased when shrinking)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import jax
    import jax.numpy as jnp

    out = jax.image.resize(jnp.asarray(images), (images.shape[0], size, size, images.shape[3]), "bilinear")
    return np.asarray(out, dtype=np.float32)


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def load_digits(image_size: int = 8, *, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled digits: 1,797 real 8x8 grey images; `image_size` 8 (native) or larger."""
    if image_size < 8:
        raise ValueError(f"image_size={image_size}: digits are 8x8; use 8 or a larger size such as 32")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[..., None]
    labels = bunch.target.astype(np.int32)
    images = _resize(images, image_size)
    train_idx, test_idx = _stratified_split(labels, test_fraction, seed)
    train_x, test_x = _standardize(images[train_idx], images[test_idx])
    return ImageDataset(
        "digits", train_x, labels[train_idx], test_x, labels[test_idx], 10, tuple(str(i) for i in range(10))
    )


SHAPE_CLASSES = ("disk", "ring", "square", "frame", "triangle", "plus", "crescent", "star", "half_disk", "dumbbell")


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u, v), in the shape's own rotated unit frame, for shape class `kind`."""
    rho = np.sqrt(u * u + v * v)
    if kind == 0:
        return rho < 1.0
    if kind == 1:
        return (rho < 1.0) & (rho > 0.55)
    if kind == 2:
        return np.maximum(abs(u), abs(v)) < 0.8
    if kind == 3:
        m = np.maximum(abs(u), abs(v))
        return (m < 0.85) & (m > 0.5)
    if kind == 4:
        return (v > -0.55) & (np.sqrt(3.0) * abs(u) + v < 0.95)
    if kind == 5:
        return ((abs(u) < 0.3) & (abs(v) < 1.0)) | ((abs(v) < 0.3) & (abs(u) < 1.0))
    if kind == 6:
        return (rho < 1.0) & (np.sqrt((u - 0.55) ** 2 + v * v) > 0.8)
    if kind == 7:
        theta = np.arctan2(v, u)
        return rho < 0.4 + 0.6 * np.abs(np.cos(2.5 * theta)) ** 2
    if kind == 8:
        return (rho < 1.0) & (v > 0.0)
    if kind == 9:
        return (np.sqrt((u - 0.55) ** 2 + v * v) < 0.42) | (np.sqrt((u + 0.55) ** 2 + v * v) < 0.42)
    raise ValueError(f"unknown shape class {kind}")


def _render_shape_image(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Background: a random colour gradient.
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    t = (xx * np.cos(a := rng.uniform(0, 2 * np.pi)) + yy * np.sin(a)) / size
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    image = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    # Clutter: small blobs and strokes in other colours, drawn before the shape.
    for _ in range(rng.integers(3, 7)):
        cy, cx = rng.uniform(0, size, 2)
        colour = rng.uniform(0, 1, 3)
        if rng.uniform() < 0.5:
            r = rng.uniform(1.0, 2.5)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            ang = rng.uniform(0, np.pi)
            dist = np.abs((xx - cx) * np.sin(ang) - (yy - cy) * np.cos(ang))
            along = np.abs((xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang))
            blob = (dist < 0.7) & (along < rng.uniform(3, 8))
        image[blob] = colour
    # The shape: random scale, position and rotation, with a striped or checkered texture.
    scale = rng.uniform(0.22, 0.38) * size
    cy, cx = rng.uniform(scale, size - scale, 2)
    rot = rng.uniform(0, 2 * np.pi)
    du, dv = (xx - cx) / scale, (yy - cy) / scale
    u = du * np.cos(rot) + dv * np.sin(rot)
    v = -du * np.sin(rot) + dv * np.cos(rot)
    mask = _shape_mask(kind, u, v)
    fg_a, fg_b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    period = rng.uniform(2.0, 5.0)
    if rng.uniform() < 0.5:
        pattern = np.sin((xx * np.cos(rot) + yy * np.sin(rot)) * 2 * np.pi / period) > 0
    else:
        pattern = ((xx // period + yy // period) % 2) == 0
    texture = np.where(pattern[..., None], fg_a[None, None], fg_b[None, None])
    image = np.where(mask[..., None], texture, image)
    image = image + rng.normal(0.0, 0.06, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def make_shapes_dataset(
    n_train: int = 5000, n_test: int = 1000, *, image_size: int = 32, seed: int = 0
) -> ImageDataset:
    """Ten textured shape classes on cluttered, noisy backgrounds (balanced, seeded, 32x32 RGB)."""
    if n_train < 10 or n_test < 10:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must each be >= 10 (one per class)")
    if image_size < 16:
        raise ValueError(f"image_size={image_size} must be >= 16")
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    labels = np.arange(total, dtype=np.int32) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    images = np.stack([_render_shape_image(rng, int(k), image_size) for k in labels])
    train_x, test_x = _standardize(images[:n_train], images[n_train:])
    return ImageDataset(
        "shapes", train_x, labels[:n_train], test_x, labels[n_train:], len(SHAPE_CLASSES), SHAPE_CLASSES
    )


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_RECORD = 1 + 32 * 32 * 3


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch file as (images float32 NHWC in [0, 1], labels int32), unstandardized."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(
            f"{path} is not a CIFAR-10 binary batch: its size {raw.size} bytes is not a positive "
            f"multiple of the {_CIFAR_RECORD}-byte record"
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise ValueError(f"{path}: label byte {labels.max()} is out of range 0..9; is this CIFAR-100?")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return images, labels


def load_cifar10(path: str | Path, *, max_train: int | None = None) -> ImageDataset:
    """The official CIFAR-10 binary version: `data_batch_{1..5}.bin` and `test_batch.bin` under `path`
    (or under `path/cifar-10-batches-bin`)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"--data-path {root} does not exist; point it at the extracted cifar-10-batches-bin folder"
        )
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    train_files = [root / f"data_batch_{i}.bin" for i in range(1, 6)]
    missing = [f.name for f in train_files + [root / "test_batch.bin"] if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 folder {root} lacks {missing}; expected the binary version "
            "(data_batch_1.bin .. data_batch_5.bin, test_batch.bin)"
        )
    parts = [read_cifar10_batch(f) for f in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    if max_train is not None:
        train_x, train_y = train_x[:max_train], train_y[:max_train]
    test_x, test_y = read_cifar10_batch(root / "test_batch.bin")
    train_x, test_x = _standardize(train_x, test_x)
    return ImageDataset("cifar10", train_x, train_y, test_x, test_y, 10, CIFAR10_CLASSES)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


def _load_folder_split(split_dir: Path, classes: Sequence[str], image_size: int, max_per_class: int | None):
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix in IMAGE_SUFFIXES)
        if max_per_class is not None:
            files = files[:max_per_class]
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    # Resize the short side, then centre-crop: the usual evaluation transform.
                    w, h = im.size
                    s = image_size / min(w, h)
                    im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BILINEAR)
                    w, h = im.size
                    left, top = (w - image_size) // 2, (h - image_size) // 2
                    im = im.crop((left, top, left + image_size, top + image_size))
                    images.append(np.asarray(im, dtype=np.float32) / 255.0)
            except OSError as err:
                raise ValueError(f"cannot read image {f}: {err}") from None
            labels.append(label)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES[:5])}) found under {split_dir}")
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def load_image_folder(
    path: str | Path,
    *,
    image_size: int = 224,
    max_per_class: int | None = None,
    train_dir: str = "train",
    test_dir: str = "val",
) -> ImageDataset:
    """ImageNet-style class folders: `path/train/<class>/*.jpg` and `path/val/<class>/*.jpg`.

    Everything is decoded into memory, so use `max_per_class` for subsets of ImageNet-sized data.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data-path {root} is not a directory; expected {train_dir}/<class>/ and {test_dir}/<class>/"
        )
    for split in (train_dir, test_dir):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"image folder {root} has no '{split}' subfolder (expected {train_dir}/ and {test_dir}/)"
            )
    classes = sorted(p.name for p in (root / train_dir).iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root / train_dir} has no class subfolders")
    missing = [c for c in classes if not (root / test_dir / c).is_dir()]
    if missing:
        raise ValueError(f"{root / test_dir} lacks class folders {missing[:5]} present in {train_dir}/")
    train_x, train_y = _load_folder_split(root / train_dir, classes, image_size, max_per_class)
    test_x, test_y = _load_folder_split(root / test_dir, classes, image_size, max_per_class)
    train_x, test_x = _standardize(train_x, test_x)
    return ImageDataset(root.name, train_x, train_y, test_x, test_y, len(classes), tuple(classes))


DATASETS = ("digits", "shapes", "cifar10", "imagefolder")


def load_dataset(
    name: str, *, data_path: str | None = None, image_size: int | None = None, seed: int = 0, quick: bool = False
) -> ImageDataset:
    """One entry point for the command line: built-in sets by name, user sets by name plus path."""
    if name == "digits":
        return load_digits(image_size or 8, seed=seed)
    if name == "shapes":
        n_train, n_test = (2000, 500) if quick else (8000, 2000)
        return make_shapes_dataset(n_train, n_test, image_size=image_size or 32, seed=seed)
    if name in ("cifar10", "imagefolder"):
        if not data_path:
            raise ValueError(f"dataset {name!r} needs --data-path pointing at your copy (nothing is downloaded)")
        if name == "cifar10":
            return load_cifar10(data_path)
        return load_image_folder(data_path, image_size=image_size or 224)
    raise ValueError(f"dataset={name!r} is not known; choose one of {list(DATASETS)}")


@dataclasses.dataclass(frozen=True)
class BatchSampler:
    """Step number -> example indices: a fresh seeded permutation per epoch, last partial batch dropped."""

    num_examples: int
    batch_size: int
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.num_examples < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than the {self.num_examples} training examples")

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        return order[position * self.batch_size : (position + 1) * self.batch_size]


def eval_batches(num_examples: int, batch_size: int):
    """Yields (indices, weights) covering every example once; the last batch is padded with weight 0."""
    for start in range(0, num_examples, batch_size):
        idx = np.arange(start, start + batch_size)
        weights = (idx < num_examples).astype(np.float32)
        yield np.minimum(idx, num_examples - 1), weights


USER_DATASETS = ("cifar10", "imagefolder")


def user_cache_dir() -> Path:
    """frugal's folder in the user's cache directory: $XDG_CACHE_HOME/frugal, else ~/.cache/frugal."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frugal"


def cache_folder(cache_dir, system: str) -> Path | None:
    """A system's `--cache-dir` value resolved: None (nothing is cached), "auto" (its folder under
    `user_cache_dir()`), or the user's path."""
    if cache_dir is None:
        return None
    return user_cache_dir() / system if cache_dir == "auto" else Path(cache_dir)


def check_data_path(dataset: str, data_path) -> None:
    """Refuses `data_path` for a built-in dataset (it would be ignored) and requires it for the user's."""
    if data_path is not None and dataset not in USER_DATASETS:
        raise ValueError(
            f"data_path={data_path!r} is given but dataset={dataset!r} is built in and reads no path; "
            f"use --dataset {' or '.join(USER_DATASETS)} for your own data, or drop --data-path"
        )
    if dataset in USER_DATASETS and not data_path:
        raise ValueError(
            f"dataset={dataset!r} needs --data-path pointing at your copy (data_path; nothing is downloaded)"
        )
