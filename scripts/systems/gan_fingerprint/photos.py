"""The built-in real class: photographs that ship inside PyPI wheels or Debian packages, cut into patches.

GAN-image detectors learn real-vs-fake from the statistics of real camera images (Wang et al., CVPR 2020,
https://github.com/PeterWang512/CNNDetection; Wang et al., arXiv 2212.13466). With nothing downloaded at
run time, the real images here are the natural photographs bundled in scikit-image's wheel
(`skimage.data`) and scikit-learn's (`sklearn.datasets.load_sample_image`), always installed, and,
optionally, the photographic wallpapers of two Debian main packages (`apt install mate-backgrounds
plasma-workspace-wallpapers`): 21 more colour scenes of 1280-2560 px (and two grey ones), so that a
photo-disjoint split can hold several test photos instead of one. `PHOTOS` lists each with its source
package, native size and licence as the package states it; `EXCLUDED` says why the other images are
not used; `PHOTO_GROUPS` names the two sets ("bundled", "debian").

Choices (each a parameter of `load_photo_patches`):
- `names=` takes photo names and group names (`expand_photo_names`). A Debian photo whose package is not
  installed fails with the `apt install` line that provides it.
- Grey photographs are opt-in. Replicated to three channels they have R = G = B exactly, which no
  generator reproduces, so a detector could call every grey patch real without looking at fingerprints.
  `DEFAULT_PHOTOS` is the seven colour photographs in wheels; name a grey one in `names=` to add it
  (replicated; the Debian wallpapers `coldripple` and `grey` are stored as RGB with R = G = B).
- Every photo is shrunk (antialiased bicubic, Pillow) so its shorter side is `short_side` (default 288,
  just below the smallest colour photo's 300, so every default photo goes through the same single
  downscale and none is ever upscaled: upscaling would print an interpolation fingerprint on the real
  class). Shrinking packs more texture into a patch; a photo already smaller is kept at native size.
- Patches are SIZE x SIZE windows at `stride` (default SIZE // 2). Flat windows (sky, bokeh, studio
  backdrop) are dropped when `texture_score` is below `TEXTURE_THRESHOLD`.
- Train / validation / test are split by photo, so no scene is seen in two splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
DEFAULT_SHORT_SIDE = 288
# Luminance high-pass RMS (see `texture_score`) below which a window counts as flat. Measured on the
# default photos at 32 px: flat sky and backdrop windows score 0.002-0.005, soft fur and skin 0.009 and
# up; 0.008 is about two grey levels of pixel-to-pixel variation.
TEXTURE_THRESHOLD = 0.008
_FORMAT = 1  # bump when the cached arrays change meaning


_MATE_LICENCE = "GPL-2+ (/usr/share/doc/mate-backgrounds/copyright)"
_PLASMA_LICENCE = "LGPL-3 (the wallpaper's metadata.json; the package's copyright file says GPL-2+)"


@dataclasses.dataclass(frozen=True)
class Photo:
    """One photograph of the real class: where it comes from and under what terms."""

    name: str
    package: str  # the PyPI distribution or Debian package that ships it
    loader: str  # the public call that returns it ("Pillow": the Debian file, read with Pillow)
    height: int  # native size in pixels
    width: int
    grey: bool  # R = G = B: stored as one channel (replicated to three when used) or as equal channels
    licence: str  # as stated by the package (docstring or README next to the file)
    credit: str
    file: str | None = None  # Debian photos: the installed file, relative to `DEBIAN_ROOT`


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "scikit-image", "skimage.data.astronaut()", 512, 512, False,
          "public domain (no known copyright restrictions; skimage.data.astronaut docstring)",
          "NASA, Eileen Collins portrait"),
    Photo("chelsea", "scikit-image", "skimage.data.chelsea()", 300, 451, False,
          "CC0 (skimage.data.chelsea docstring)", "Stefan van der Walt"),
    Photo("coffee", "scikit-image", "skimage.data.coffee()", 400, 600, False,
          "CC0 (skimage.data.coffee docstring)", "Rachel Michetti, courtesy of Pikolo Espresso Bar"),
    Photo("rocket", "scikit-image", "skimage.data.rocket()", 427, 640, False,
          "public domain (released by SpaceX; skimage.data.rocket docstring)", "SpaceX, DSCOVR launch"),
    Photo("motorcycle", "scikit-image", "skimage.data.stereo_motorcycle()[0]", 500, 741, False,
          "no licence stated in the docstring; shipped under scikit-image's LICENSE.txt (Files: *, BSD-3-Clause)",
          "Middlebury 2014 stereo benchmark, Scharstein et al., GCPR 2014 (left view)"),
    Photo("china", "scikit-learn", "sklearn.datasets.load_sample_image('china.jpg')", 427, 640, False,
          "CC BY 2.0 (sklearn/datasets/images/README.txt)", "danielbuechele on Flickr"),
    Photo("flower", "scikit-learn", "sklearn.datasets.load_sample_image('flower.jpg')", 427, 640, False,
          "CC BY 2.0 (sklearn/datasets/images/README.txt)", "vultilion on Flickr"),
    Photo("camera", "scikit-image", "skimage.data.camera()", 512, 512, True,
          "CC0 (skimage.data.camera docstring)", "Lav Varshney"),
    Photo("grass", "scikit-image", "skimage.data.grass()", 512, 512, True,
          "CC0 (skimage.data.grass docstring)", "linolafett on DeviantArt, cropped and made grey"),
    Photo("gravel", "scikit-image", "skimage.data.gravel()", 512, 512, True,
          "CC0 (skimage.data.gravel docstring)", "CC0Textures Gravel04, rescaled and made grey"),
    Photo("brick", "scikit-image", "skimage.data.brick()", 512, 512, True,
          "CC0 (skimage.data.brick docstring)", "CC0Textures Bricks25, perspective-warped and made grey"),
    Photo("coins", "scikit-image", "skimage.data.coins()", 303, 384, True,
          "no known copyright restrictions (skimage.data.coins docstring)", "Brooklyn Museum collection"),
    # Debian main, bookworm (mate-backgrounds 1.26.0-1, plasma-workspace-wallpapers 4:5.27.5-2)
    Photo("aqua", "mate-backgrounds", "Pillow", 1600, 2560, False,
          _MATE_LICENCE, "Charles Barbin", "usr/share/backgrounds/mate/nature/Aqua.jpg"),
    Photo("blinds", "mate-backgrounds", "Pillow", 1200, 1920, False,
          _MATE_LICENCE, "Lennart Poettering, Andrea Cimitan", "usr/share/backgrounds/mate/nature/Blinds.jpg"),
    Photo("dune", "mate-backgrounds", "Pillow", 1050, 1680, False,
          _MATE_LICENCE, "Marco Cogoni, Hylke Bons", "usr/share/backgrounds/mate/nature/Dune.jpg"),
    Photo("freshflower", "mate-backgrounds", "Pillow", 1203, 1600, False,
          _MATE_LICENCE, "Jens Ansorg", "usr/share/backgrounds/mate/nature/FreshFlower.jpg"),
    Photo("garden", "mate-backgrounds", "Pillow", 1600, 2560, False,
          _MATE_LICENCE, "Charles Barbin", "usr/share/backgrounds/mate/nature/Garden.jpg"),
    Photo("greenmeadow", "mate-backgrounds", "Pillow", 1024, 1280, False,
          _MATE_LICENCE, "Timothy Schellhase, Lapo Calamandrei", "usr/share/backgrounds/mate/nature/GreenMeadow.jpg"),
    Photo("ladybird", "mate-backgrounds", "Pillow", 1600, 2560, False,
          _MATE_LICENCE, "Charles Barbin", "usr/share/backgrounds/mate/nature/LadyBird.jpg"),
    Photo("raindrops", "mate-backgrounds", "Pillow", 1200, 1920, False,
          _MATE_LICENCE, "blackcombwhistler07", "usr/share/backgrounds/mate/nature/RainDrops.jpg"),
    Photo("storm", "mate-backgrounds", "Pillow", 1280, 1920, False,
          _MATE_LICENCE, "Sergey Nazarov", "usr/share/backgrounds/mate/nature/Storm.jpg"),
    Photo("twowings", "mate-backgrounds", "Pillow", 1600, 2560, False,
          _MATE_LICENCE, "Charles Barbin, Hylke Bons", "usr/share/backgrounds/mate/nature/TwoWings.jpg"),
    Photo("wood", "mate-backgrounds", "Pillow", 1920, 2560, False,
          _MATE_LICENCE, "Jean-Francois Fortin Tam", "usr/share/backgrounds/mate/nature/Wood.jpg"),
    Photo("yellowflower", "mate-backgrounds", "Pillow", 1600, 2560, False,
          _MATE_LICENCE, "Charles Barbin", "usr/share/backgrounds/mate/nature/YellowFlower.jpg"),
    Photo("bythewater", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Maciej Wiklo", "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg"),
    Photo("coldripple", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, True,
          _PLASMA_LICENCE, "Risto Saukonpaa", "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg"),
    Photo("colorfulcups", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Dmitri Popov", "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg"),
    Photo("darkesthour", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Risto Saukonpaa", "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg"),
    Photo("eveningglow", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Ian Hex", "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg"),
    Photo("fallenleaf", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Martin Klapetek", "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg"),
    Photo("grey", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, True,
          _PLASMA_LICENCE, "Sigi Sagi", "usr/share/wallpapers/Grey/contents/images/2560x1600.jpg"),
    Photo("kite", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Risto Saukonpaa", "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg"),
    Photo("onestandsout", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Risto Saukonpaa", "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg"),
    Photo("path", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Risto Saukonpaa", "usr/share/wallpapers/Path/contents/images/2560x1600.jpg"),
    Photo("summer_1am", "plasma-workspace-wallpapers", "Pillow", 1600, 2560, False,
          _PLASMA_LICENCE, "Risto Saukonpaa", "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg"),
)  # fmt: skip

BUNDLED_PHOTOS: tuple[str, ...] = tuple(p.name for p in PHOTOS if not p.grey and p.file is None)
DEBIAN_PHOTOS: tuple[str, ...] = tuple(p.name for p in PHOTOS if not p.grey and p.file is not None)
PHOTO_GROUPS: dict[str, tuple[str, ...]] = {"bundled": BUNDLED_PHOTOS, "debian": DEBIAN_PHOTOS}
DEFAULT_PHOTOS = BUNDLED_PHOTOS  # always installed: the default of every loader
DEBIAN_ROOT = Path("/")  # where Debian installs its files (a test points it elsewhere)

EXCLUDED: dict[str, str] = {
    "mate-backgrounds abstract/, desktop/": "drawn or rendered art, not photographs",
    "plasma-workspace-wallpapers Autumn": "a painting",
    "the other plasma-workspace-wallpapers": "rendered art (Altai, Canopee, Flow, Honeywave, Kay, ...)",
    "ukui-wallpapers, gnome-backgrounds": "digital art and patterns",
    "checkerboard, colorwheel, logo, text, horse, shepp_logan_phantom": "drawn or synthetic, not photographs",
    "stereo_motorcycle right view": "the same scene as `motorcycle` a few centimetres to the side",
    "clock": "deliberately motion-blurred over the whole frame: almost no texture survives",
    "page": "a scanned page of text, not a scene",
    "moon": "no licence stated in its docstring, and very low contrast",
    "lfw_subset": "25 x 25 face crops, smaller than one 32 px patch after resizing",
    "retina, microaneurysms": "fundus photographs: a black mask around one smooth red disc, far from scenes",
    "immunohistochemistry, cell": "microscopy (stained tissue; a phase image computed from a hologram)",
    "hubble_deep_field": "a processed composite of long telescope exposures, mostly black sky",
    "matplotlib grace_hopper.jpg": "no licence statement inside the matplotlib wheel",
}


def photo_record(name: str) -> Photo:
    """The `PHOTOS` entry called `name`."""
    for photo in PHOTOS:
        if photo.name == name:
            return photo
    raise ValueError(
        f"photo name {name!r} is not known; choose from {[p.name for p in PHOTOS]} or the groups {list(PHOTO_GROUPS)}"
    )


def expand_photo_names(names: Sequence[str]) -> tuple[str, ...]:
    """Photo names with each group name (`PHOTO_GROUPS`) replaced by its photos, in order, without repeats.

    Every name is checked against `PHOTOS`; whether a Debian photo is installed is checked when it is read.
    """
    if isinstance(names, str) or not names:
        raise ValueError(f"names={names!r} must be a non-empty sequence of photo or group names")
    out: list[str] = []
    for name in names:
        for member in PHOTO_GROUPS.get(name, (name,)):
            photo_record(member)
            if member not in out:
                out.append(member)
    return tuple(out)


def photo_file(name: str) -> Path | None:
    """The installed file of a Debian photo (None for a wheel photo); a clear error when it is missing."""
    photo = photo_record(name)
    if photo.file is None:
        return None
    path = Path(DEBIAN_ROOT) / photo.file
    if not path.is_file():
        raise FileNotFoundError(
            f"photo {name!r} comes from the Debian package {photo.package}, which is not installed ({path} is "
            f"missing): run `apt install {photo.package}` (Debian/Ubuntu), or leave the 'debian' photos out"
        )
    return path


def _native_photo(name: str) -> np.ndarray:
    """The photo as its package ships it: uint8 (H, W, 3) (one-channel grey replicated to three)."""
    photo = photo_record(name)
    path = photo_file(name)
    if path is not None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(
                f"photo {name!r}: cannot read {path} ({err}); "
                f"reinstall it with `apt install --reinstall {photo.package}`"
            ) from None
    elif photo.package == "scikit-learn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


def shrink_to_short_side(image: np.ndarray, short_side: int | None) -> np.ndarray:
    """uint8 (H, W, 3) image shrunk (Pillow antialiased bicubic) so its shorter side is `short_side`.

    An image whose shorter side is already <= `short_side` (or `short_side=None`) is returned as it is:
    never upscaled, since interpolation would leave its own fingerprint on the real class.
    """
    if short_side is None or min(image.shape[:2]) <= short_side:
        return image
    from PIL import Image

    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    new_w, new_h = max(short_side, round(w * scale)), max(short_side, round(h * scale))
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC), dtype=np.uint8)


def load_photo(name: str, *, short_side: int | None = DEFAULT_SHORT_SIDE) -> np.ndarray:
    """Photo `name` from `PHOTOS` as uint8 (H, W, 3), shrunk so its shorter side is `short_side`."""
    _check_short_side(short_side)
    return shrink_to_short_side(_native_photo(name), short_side)


def cut_patches(image: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every `size` x `size` window of an (H, W, C) image whose top-left corner lies on the `stride` grid.

    Returns (patches (n, size, size, C) with the image's dtype, origins (n, 2) int32 (top, left)),
    row-major. Windows that would cross the bottom or right edge are not cut.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C), got shape {image.shape}")
    if size < 1 or stride < 1:
        raise ValueError(f"size={size} and stride={stride} must be >= 1")
    h, w = image.shape[:2]
    tops, lefts = np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride)
    origins = np.stack(np.meshgrid(tops, lefts, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.int32)
    if len(origins) == 0:  # the image is smaller than one window
        return np.zeros((0, size, size, image.shape[2]), image.dtype), origins
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))  # (h', w', C, s, s)
    patches = windows[origins[:, 0], origins[:, 1]].transpose(0, 2, 3, 1)
    return np.ascontiguousarray(patches), origins


def texture_score(patches: np.ndarray) -> np.ndarray:
    """Per-patch texture: RMS of the luminance's pixel-to-pixel differences about their mean.

    `patches` is (n, h, w, 3), uint8 or float in [0, 1]. Luminance is ITU-R BT.601 (0.299, 0.587,
    0.114) in [0, 1]; the score is sqrt((var(dx) + var(dy)) / 2) over the horizontal and vertical first
    differences of each patch. A constant patch and a linear ramp (a smooth sky gradient) both score 0;
    fur, foliage, text and edges score high.
    """
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3:
        raise ValueError(f"patches must be (n, h, w, 3), got shape {patches.shape}")
    scale = 255.0 if patches.dtype == np.uint8 else 1.0
    luma = patches.astype(np.float32) @ (np.array([0.299, 0.587, 0.114], np.float32) / scale)
    dx, dy = np.diff(luma, axis=2), np.diff(luma, axis=1)
    return np.sqrt(0.5 * (dx.var(axis=(1, 2)) + dy.var(axis=(1, 2))))


def split_photos(names: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, tuple[str, ...]]:
    """Assigns whole photos to train / val / test: a seeded shuffle, then counts by largest remainder.

    Every split with a positive fraction gets at least one photo; a split with fraction 0 gets none.
    """
    fractions = _check_fractions(fractions)
    names = sorted(names)
    wanted = sum(f > 0 for f in fractions)
    if len(names) < wanted:
        raise ValueError(f"names: {len(names)} photos cannot fill {wanted} non-empty splits (fractions={fractions})")
    exact = np.asarray(fractions) * len(names)
    counts = np.floor(exact).astype(int)
    counts[(counts == 0) & (exact > 0)] = 1
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if counts.sum() >= len(names):
            break
        counts[i] += 1
    while counts.sum() > len(names):  # minimum-one bumps overshot: take from the largest split
        counts[np.argmax(counts)] -= 1
    order = np.random.default_rng(seed).permutation(len(names))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {s: tuple(sorted(names[i] for i in order[bounds[k] : bounds[k + 1]])) for k, s in enumerate(SPLITS)}


@dataclasses.dataclass(frozen=True)
class PhotoPatches:
    """Textured patches of the bundled photos, split by photo.

    train, val, test: float32 (n, size, size, 3) in [0, 1]. photo_ids[split]: (n,) photo name per patch;
    origins[split]: (n, 2) int32 (top, left) of the patch in the shrunk photo (`load_photo`).
    split_table: split -> photo names. kept_fraction: share of all windows that passed the texture
    filter (before `max_per_split`). settings: every argument that produced the arrays.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    photo_ids: dict[str, np.ndarray]
    origins: dict[str, np.ndarray]
    split_table: dict[str, tuple[str, ...]]
    kept_fraction: float
    settings: dict

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"split={name!r} must be one of {SPLITS}")
        return getattr(self, name)


def load_photo_patches(
    size: int = 32,
    *,
    names: Sequence[str] | None = None,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    stride: int | None = None,
    texture_threshold: float = TEXTURE_THRESHOLD,
    split_seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    max_per_split: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> PhotoPatches:
    """Real-class patches from the photographs in `names` (see the module docstring for each choice).

    size: patch side, 32 or 64. names: photos from `PHOTOS` and groups from `PHOTO_GROUPS` (default
    `DEFAULT_PHOTOS`, the colour ones in wheels). stride: window step (default size // 2).
    max_per_split: keep at most this many patches per split, a seeded sample. cache_dir: a folder (e.g.
    `frugal.scripts.data.cache_folder(cache_dir, "gan_fingerprint")`) for an .npz keyed by every setting
    (Debian photos by their files' size and time too); None caches nothing.
    """
    if size not in (32, 64):
        raise ValueError(f"size={size} must be 32 or 64")
    stride = size // 2 if stride is None else stride
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride={stride!r} must be a positive int (or None for size // 2)")
    _check_short_side(short_side)
    if short_side is not None and short_side < size:
        raise ValueError(f"short_side={short_side} is smaller than the patch size {size}")
    if names is not None and (isinstance(names, str) or len(set(names)) != len(tuple(names))):
        raise ValueError(f"names={names!r} must be a non-empty sequence of distinct photo or group names")
    names = expand_photo_names(DEFAULT_PHOTOS if names is None else tuple(names))
    if not texture_threshold >= 0:
        raise ValueError(f"texture_threshold={texture_threshold} must be >= 0")
    if max_per_split is not None and max_per_split < 1:
        raise ValueError(f"max_per_split={max_per_split} must be >= 1 or None")
    fractions = _check_fractions(fractions)
    settings = {
        "format": _FORMAT,
        "names": sorted(names),
        "size": size,
        "stride": stride,
        "short_side": short_side,
        "texture_threshold": float(texture_threshold),
        "split_seed": split_seed,
        "fractions": list(fractions),
        "max_per_split": max_per_split,
        "packages": _package_versions(),
    }
    if any(photo_record(n).file is not None for n in names):
        settings["files"] = _file_stamps(names)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"photo-patches-{size}px-{key}.npz"
        cached = _read_cache(path, settings)
        if cached is not None:
            return cached
    arrays = _build(settings)
    if path is not None:
        _write_cache(path, arrays)
    return _from_arrays(arrays, settings)


def _build(settings: dict) -> dict[str, np.ndarray]:
    size, stride, threshold = settings["size"], settings["stride"], settings["texture_threshold"]
    table = split_photos(settings["names"], settings["fractions"], settings["split_seed"])
    rng = np.random.default_rng([settings["split_seed"], size, stride])
    arrays: dict[str, np.ndarray] = {}
    windows = kept = 0
    for split in SPLITS:
        patches, ids, origins = [], [], []
        for name in table[split]:
            p, o = cut_patches(load_photo(name, short_side=settings["short_side"]), size, stride)
            keep = texture_score(p) >= threshold
            windows, kept = windows + len(p), kept + int(keep.sum())
            patches.append(p[keep])
            origins.append(o[keep])
            ids.extend([name] * int(keep.sum()))
        patches = np.concatenate(patches) if patches else np.zeros((0, size, size, 3), np.uint8)
        origins = np.concatenate(origins) if origins else np.zeros((0, 2), np.int32)
        ids = np.asarray(ids, dtype=str).reshape(-1)
        cap = settings["max_per_split"]
        if cap is not None and len(patches) > cap:
            pick = np.sort(rng.choice(len(patches), cap, replace=False))
            patches, origins, ids = patches[pick], origins[pick], ids[pick]
        arrays[f"{split}.patches"] = patches
        arrays[f"{split}.photo_ids"] = ids
        arrays[f"{split}.origins"] = origins
        arrays[f"{split}.photos"] = np.asarray(table[split], dtype=str).reshape(-1)
    arrays["kept_fraction"] = np.float64(kept / max(windows, 1))
    arrays["settings"] = np.asarray(json.dumps(settings, sort_keys=True))
    return arrays


def _from_arrays(arrays: dict[str, np.ndarray], settings: dict) -> PhotoPatches:
    images = {s: arrays[f"{s}.patches"].astype(np.float32) / np.float32(255.0) for s in SPLITS}
    return PhotoPatches(
        **images,
        photo_ids={s: arrays[f"{s}.photo_ids"] for s in SPLITS},
        origins={s: arrays[f"{s}.origins"] for s in SPLITS},
        split_table={s: tuple(str(n) for n in arrays[f"{s}.photos"]) for s in SPLITS},
        kept_fraction=float(arrays["kept_fraction"]),
        settings=settings,
    )


def _read_cache(path: Path, settings: dict) -> PhotoPatches | None:
    """The cached patches if `path` holds them for exactly `settings` (no pickle), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if json.loads(str(arrays["settings"])) != json.loads(json.dumps(settings, sort_keys=True)):
            return None
        return _from_arrays(arrays, settings)
    except (OSError, ValueError, KeyError):  # truncated or foreign file: rebuild and overwrite it
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes the .npz atomically: a temporary file in the same folder renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _package_versions() -> dict[str, str]:
    """Versions of the packages the photos come from: a new release may ship different files."""
    from importlib.metadata import version

    return {p: version(p) for p in ("scikit-image", "scikit-learn", "pillow")}


def _file_stamps(names: Sequence[str]) -> dict[str, list[int]]:
    """Size and modification time of each Debian photo's file: a package upgrade may replace it."""
    stamps = {}
    for name in names:
        path = photo_file(name)
        if path is not None:
            stat = path.stat()
            stamps[name] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def _check_short_side(short_side) -> None:
    if short_side is not None and (not isinstance(short_side, int) or short_side < 1):
        raise ValueError(f"short_side={short_side!r} must be a positive int or None (native size)")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] == 0:
        raise ValueError(
            f"fractions={fractions} must be three non-negative (train, val, test) shares summing to 1, "
            "with a positive train share"
        )
    return fractions
