"""Loaders for a user's own real and fake images, all returning one labelled form (`LabelledImages`).

Nothing is downloaded; each loader reads a path the user gives and fails with a ValueError that names
the argument or file when the layout is not what it expects.

- `load_cnndetection(root, size=...)`: the CNNDetection layout (Wang et al., CVPR 2020,
  https://github.com/PeterWang512/CNNDetection), `<root>/<generator>/<class>/{0_real,1_fake}/*.png|jpg`,
  or `<root>/<generator>/{0_real,1_fake}/` without the class level (CNNDetection's test sets for e.g.
  stargan, whichfaceisreal). One `LabelledImages` per generator; `classes=` keeps the 1/2/4-class
  training subsets of the GAN-fingerprint paper (arXiv 2212.13466): horse / horse,car /
  horse,car,cat,airplane.
- `load_real_folder(root, size=...)`: every image under a folder (recursive) as the real class, whole
  (centre-cropped and resized) or cut into textured patches as the built-in photos are.
- `load_cifar10_real(path)`: a user's CIFAR-10 binary files as the real class, in [0, 1].

Images are fitted to size x size by a centre crop to the largest square followed by one Pillow bicubic
resize (antialiased when shrinking). CNNDetection itself evaluates 224 px crops without resizing; at
32 or 64 px the generators' high-frequency fingerprints are partly averaged away, which is the price of
the small scale. Resizing up (e.g. CIFAR-10 to 64 px) adds an interpolation fingerprint to the real
class, so prefer a size at or below the images' own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frugal.scripts.systems.gan_fingerprint.photos import TEXTURE_THRESHOLD, cut_patches, texture_score

REAL, FAKE = 0, 1
LABEL_FOLDERS = ("0_real", "1_fake")  # CNNDetection's folder names; the digit is the label
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# The GAN-fingerprint paper's training subsets of ProGAN's 20 LSUN classes (arXiv 2212.13466).
CLASS_SUBSETS = {1: ("horse",), 2: ("horse", "car"), 4: ("horse", "car", "cat", "airplane")}


def check_images(images, *, size: int | None, name: str):
    """Validates a batch of images and returns it unchanged: 4-D NHWC, 3 channels, size x size, float in [0, 1].

    `size=None` accepts any square size. Values (finite, within [0, 1]) are checked on host arrays; a
    traced JAX array (inside `jit`) gets the shape and dtype checks only.
    """
    shape, dtype = getattr(images, "shape", None), getattr(images, "dtype", None)
    if shape is None or dtype is None:
        images = np.asarray(images)
        shape, dtype = images.shape, images.dtype
    if len(shape) != 4:
        raise ValueError(f"{name} must be a 4-D (n, height, width, 3) NHWC batch, got shape {tuple(shape)}")
    if shape[-1] != 3:
        hint = " (channels first? use NHWC)" if shape[1] == 3 else ""
        raise ValueError(f"{name} must have 3 colour channels last (NHWC), got shape {tuple(shape)}{hint}")
    if size is not None and (shape[1], shape[2]) != (size, size):
        raise ValueError(f"{name} must be {size}x{size} images, got {shape[1]}x{shape[2]} (shape {tuple(shape)})")
    if size is None and shape[1] != shape[2]:
        raise ValueError(f"{name} must be square images, got {shape[1]}x{shape[2]}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)})")
    if np.dtype(dtype).kind != "f" and str(dtype) != "bfloat16":
        raise ValueError(f"{name} must be float images in [0, 1], got dtype {dtype} (divide uint8 by 255)")
    try:
        values = np.asarray(images)
    except TypeError:  # a tracer under jit: values are unknown until run time
        return images
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return images


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    """Images with real/fake labels: what every loader here returns and the detector consumes.

    images: (n, size, size, 3) float32 in [0, 1]. labels: (n,) int32, 0 = real, 1 = fake.
    sources: (n,) str, where each image came from (the generator folder, "cifar10", a folder name).
    categories: (n,) str, the CNNDetection class folder ("" where there is none).
    """

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    categories: np.ndarray

    def __post_init__(self):
        check_images(self.images, size=None, name="LabelledImages.images")
        n = len(self.images)
        for field in ("labels", "sources", "categories"):
            value = getattr(self, field)
            if value.shape != (n,):
                raise ValueError(f"LabelledImages.{field} must have shape ({n},), got {value.shape}")
        if not np.isin(self.labels, (REAL, FAKE)).all():
            raise ValueError(f"LabelledImages.labels must be 0 (real) or 1 (fake), got {np.unique(self.labels)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @classmethod
    def from_arrays(cls, *, real=None, fake=None, size: int, source: str) -> LabelledImages:
        """Real and/or fake float [0, 1] NHWC arrays (checked by `check_images`) as one labelled set."""
        parts = [(x, label, arg) for x, label, arg in ((real, REAL, "real"), (fake, FAKE, "fake")) if x is not None]
        if not parts:
            raise ValueError("from_arrays needs real=, fake= or both")
        images = [np.asarray(check_images(x, size=size, name=arg), dtype=np.float32) for x, _, arg in parts]
        labels = np.concatenate([np.full(len(x), label, np.int32) for x, (_, label, _) in zip(images, parts)])
        n = len(labels)
        return cls(np.concatenate(images), labels, np.full(n, source), np.full(n, ""))

    @classmethod
    def concatenate(cls, sets: Sequence[LabelledImages]) -> LabelledImages:
        """One set from several of the same image size."""
        if not sets:
            raise ValueError("sets is empty: nothing to concatenate")
        sizes = {s.size for s in sets}
        if len(sizes) != 1:
            raise ValueError(f"sets have different image sizes {sorted(sizes)}")
        return cls(*(np.concatenate([getattr(s, f.name) for s in sets]) for f in dataclasses.fields(cls)))


def fit_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """The image file as uint8 (size, size, 3): RGB, centre-cropped to a square, resized (Pillow bicubic)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if side != size:
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from None


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from None


def _image_files(folder: Path, *, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_size(size) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size={size!r} must be a positive int (the image side in pixels, e.g. 32 or 64)")


def _check_limit(value, name: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r} must be a positive int or None (no limit)")


def _existing_dir(path, name: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}={str(path)!r} is not a directory")
    return root


def _names(value, name: str) -> tuple[str, ...] | None:
    """A sequence of folder names, or one comma-separated string; None stays None."""
    if value is None:
        return None
    names = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
    names = tuple(str(n).strip() for n in names)
    if not names or any(not n for n in names):
        raise ValueError(f"{name}={value!r} must name at least one folder (a list or 'a,b,c')")
    return names


def _load_pair_folder(folder: Path, size: int, source: str, category: str, max_per_folder, progress):
    images, labels = [], []
    for label, sub in enumerate(LABEL_FOLDERS):
        if not (folder / sub).is_dir():
            raise ValueError(f"{folder} has no {sub}/ folder; the CNNDetection layout needs both 0_real/ and 1_fake/")
        files = _image_files(folder / sub, recursive=False)
        if not files:
            raise ValueError(f"{folder / sub} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files = files[:max_per_folder]
        if progress:
            from tqdm import tqdm

            files = tqdm(files, desc=f"{source}/{category or '-'}/{sub}", leave=False)
        images.extend(fit_image(f, size) for f in files)
        labels.extend([label] * len(files))
    n = len(labels)
    return np.stack(images), np.asarray(labels, np.int32), np.full(n, source), np.full(n, category)


def load_cnndetection(
    root: str | os.PathLike,
    *,
    size: int,
    generators: Sequence[str] | str | None = None,
    classes: Sequence[str] | str | None = None,
    max_per_folder: int | None = None,
    progress: bool = False,
) -> dict[str, LabelledImages]:
    """Per-generator real/fake sets from a CNNDetection-layout folder (see the module docstring).

    generators: generator folders to read (default: all). classes: class folders to keep, a list or
    "horse,car" (see `CLASS_SUBSETS`); it applies to generators that have a class level, each of which
    must hold at least one of them. max_per_folder: the first n files (sorted) of each 0_real / 1_fake.
    """
    root = _existing_dir(root, "root")
    _check_size(size)
    _check_limit(max_per_folder, "max_per_folder")
    classes, generators = _names(classes, "classes"), _names(generators, "generators")
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not available:
        raise ValueError(f"root={str(root)!r} has no generator folders (<root>/<generator>/[<class>/]0_real|1_fake)")
    if generators is not None:
        unknown = [g for g in generators if g not in available]
        if unknown:
            raise ValueError(f"generators={list(generators)}: {unknown} not found under {root}; found {available}")
    sets = {}
    for gan in generators or available:
        folder = root / gan
        if all((folder / sub).is_dir() for sub in LABEL_FOLDERS):
            parts = [_load_pair_folder(folder, size, gan, "", max_per_folder, progress)]
        else:
            found = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / LABEL_FOLDERS[0]).is_dir())
            if not found:
                raise ValueError(
                    f"{folder} holds neither 0_real/ and 1_fake/ nor <class>/0_real|1_fake folders "
                    "(the CNNDetection layout)"
                )
            keep = found if classes is None else [c for c in found if c in classes]
            if not keep:
                raise ValueError(
                    f"classes={list(classes)}: none found in {folder} (it has {found}); "
                    "pass generators= to read only the generators that have them"
                )
            parts = [_load_pair_folder(folder / c, size, gan, c, max_per_folder, progress) for c in keep]
        x, y, s, c = (np.concatenate(a) for a in zip(*parts))
        sets[gan] = LabelledImages(x.astype(np.float32) / np.float32(255.0), y, s, c)
    return sets


def load_real_folder(
    root: str | os.PathLike,
    *,
    size: int,
    mode: str = "resize",
    short_side: int | None = None,
    stride: int | None = None,
    texture_threshold: float = TEXTURE_THRESHOLD,
    max_images: int | None = None,
    source: str | None = None,
) -> LabelledImages:
    """Every image under `root` (recursive, sorted) as the real class (label 0).

    mode "resize": each image centre-cropped and resized to size x size. mode "patches": each image
    shrunk so its shorter side is `short_side` (None: native; never upscaled), cut into size x size
    windows at `stride` (default size // 2) and filtered by `texture_score` >= `texture_threshold`, as
    the built-in photos are (`photos.load_photo_patches`). max_images: the first n files. source: the
    `sources` string (default the folder's name).
    """
    from frugal.scripts.systems.gan_fingerprint.photos import shrink_to_short_side

    root = _existing_dir(root, "root")
    _check_size(size)
    _check_limit(max_images, "max_images")
    _check_limit(short_side, "short_side")
    if mode not in ("resize", "patches"):
        raise ValueError(f"mode={mode!r} must be 'resize' or 'patches'")
    stride = size // 2 if stride is None else stride
    _check_limit(stride, "stride")
    files = _image_files(root, recursive=True)[:max_images]
    if not files:
        raise ValueError(f"root={str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}), searched recursively")
    if mode == "resize":
        images = np.stack([fit_image(f, size) for f in files])
    else:
        patches = []
        for f in files:
            p, _ = cut_patches(shrink_to_short_side(_read_rgb(f), short_side), size, stride)
            if len(p):
                patches.append(p[texture_score(p) >= texture_threshold])
        images = np.concatenate(patches) if patches else np.zeros((0, size, size, 3), np.uint8)
        if len(images) == 0:
            raise ValueError(
                f"root={str(root)!r}: no textured {size}x{size} patch in {len(files)} images "
                f"(texture_threshold={texture_threshold}, short_side={short_side})"
            )
    n = len(images)
    return LabelledImages(
        images.astype(np.float32) / np.float32(255.0),
        np.full(n, REAL, np.int32),
        np.full(n, source or root.name),
        np.full(n, ""),
    )


def load_cifar10_real(
    path: str | os.PathLike, *, split: str = "train", size: int = 32, max_images: int | None = None
) -> LabelledImages:
    """A user's CIFAR-10 (the official binary version) as the real class, float32 in [0, 1].

    `frugal.scripts.data.load_cifar10` standardizes with the training set's mean and std, which this
    system cannot use (it needs [0, 1] pixels), so the files are read with its raw record reader.
    split: "train" (data_batch_1..5.bin) or "test" (test_batch.bin). size != 32 resizes (bicubic).
    """
    from frugal.scripts.data import read_cifar10_batch

    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    _check_size(size)
    _check_limit(max_images, "max_images")
    root = _existing_dir(path, "path")
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise ValueError(f"path={str(path)!r}: CIFAR-10 binary folder {root} lacks {missing}")
    images, total = [], 0
    for n in names:
        if max_images is not None and total >= max_images:
            break
        x, _ = read_cifar10_batch(root / n)
        images.append(x)
        total += len(x)
    images = np.concatenate(images)[:max_images]
    if size != 32:
        from PIL import Image

        as_uint8 = np.rint(images * 255.0).astype(np.uint8)
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in as_uint8]
        ).astype(np.float32) / np.float32(255.0)
    n = len(images)
    return LabelledImages(images.astype(np.float32), np.full(n, REAL, np.int32), np.full(n, "cifar10"), np.full(n, ""))
