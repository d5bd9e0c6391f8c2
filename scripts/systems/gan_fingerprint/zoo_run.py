"""`frugal ganfp zoo`: real patches, the trained generator zoo, its cached samples, quality and spectra.

Everything a detector run needs is produced here once and cached by recipe (a hash of every setting
that changes it), so `train` and `eval` start from the same zoo:

- real patches from the photos (`--photos`: the wheels' by default), split by photo (`photos.load_photo_patches`);
- each family trained through `Trainer` (`zoo.train_family`; a killed run resumes from its last
  checkpoint) and the fingerprint AE (`zoo.train_fingerprint_ae`) on the real training patches;
- samples of every family for the train / val / test splits, stored as 8-bit images, as generated
  images are shipped (PNG): real patches are 8-bit too, so a detector cannot separate the classes by
  whether pixel values lie on the 1/255 grid. Re-synthesizers re-draw the split's own real patches
  (content-matched fakes);
- per family: a Frechet distance to the real test patches in a fixed random network's feature space
  (`zoo.feature_network`; the real val-vs-test distance is the floor), and the mean spectrum of the
  fingerprints x - AE(x) with its period-2 and period-4 peak contrast (`spectra`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from frugal.models.gan_zoo import FAMILIES
from frugal.scripts.systems.gan_fingerprint.config import GanfpConfig
from frugal.scripts.systems.gan_fingerprint.photos import DEFAULT_PHOTOS, SPLITS, load_photo_patches
from frugal.scripts.systems.gan_fingerprint.spectra import mean_spectrum, peak_contrast
from frugal.scripts.systems.gan_fingerprint.zoo import (
    feature_network,
    fingerprints,
    sample_family,
    train_family,
    train_fingerprint_ae,
)
from frugal.transforms.frechet import frechet_distance

_FORMAT = 1  # bump when cached samples change meaning
_SPLIT_SEED = {"train": 11, "val": 12, "test": 13}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 8-bit, rounding to nearest (how an image file stores them)."""
    return np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32) / 255.0


def zoo_settings(config: GanfpConfig, family: str | None = None) -> dict:
    """The settings a family's model and samples depend on (the cache key); without `family`, the
    fingerprint AE's."""
    base = {
        "format": _FORMAT,
        "size": config.size,
        "patch_short_side": config.patch_short_side,
        "patch_stride": config.patch_stride,
        "zoo_batch": config.zoo_batch,
        "zoo_seed": config.zoo_seed,
    }
    if config.photo_names() != DEFAULT_PHOTOS:  # the default keeps the keys of zoos cached before this knob
        base["photos"] = list(config.photo_names())
    if family is None:
        return {
            **base,
            "ae": True,
            "width": config.zoo_width,
            "steps": config.ae_steps,
            "bottleneck": config.ae_bottleneck,
        }
    kind = FAMILIES[family].kind
    return {
        **base,
        "family": family,
        "width": config.zoo_width,
        "latent_dim": config.latent_dim if kind == "gan" else None,
        "steps": config.gan_steps if kind == "gan" else config.resynth_steps,
        "train_fakes": config.train_fakes,
        "eval_fakes": config.eval_fakes,
    }


def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: given a name, np.savez would append ".npz"
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclasses.dataclass
class Zoo:
    """The real splits and every family's samples, all float32 (N, S, S, 3) on the 8-bit grid."""

    real: dict[str, np.ndarray]  # split -> patches (val / test capped at eval_fakes)
    fakes: dict[str, dict[str, np.ndarray]]  # family -> split -> samples
    ae: object  # the trained FingerprintAE (eval mode)
    info: dict  # per family: training seconds, steps, final losses


def load_real(config: GanfpConfig) -> dict[str, np.ndarray]:
    """The real patches of each split; val and test keep a seeded sample of at most `eval_fakes`."""
    cache = config.cache_root()
    patches = load_photo_patches(
        config.size,
        names=config.photo_names(),
        short_side=config.patch_short_side,
        stride=config.patch_stride,
        cache_dir=cache,
    )
    real = {}
    for split in SPLITS:
        x = patches.split(split)
        if split != "train" and len(x) > config.eval_fakes:
            idx = np.sort(
                np.random.default_rng([config.zoo_seed, _SPLIT_SEED[split]]).choice(
                    len(x), config.eval_fakes, replace=False
                )
            )
            x = x[idx]
        real[split] = from_uint8(to_uint8(x))
    return real


def _sample_all(model, name: str, real: dict[str, np.ndarray], config: GanfpConfig) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        n = config.train_fakes if split == "train" else min(config.eval_fakes, len(real[split]))
        seed = config.zoo_seed * 1000 + _SPLIT_SEED[split]
        images = sample_family(
            model, n, seed=seed, real_images=real[split] if FAMILIES[name].kind == "resynth" else None
        )
        out[split] = to_uint8(images)
    return out


def build_zoo(config: GanfpConfig, progress: Callable[[str], None] = lambda msg: None) -> Zoo:
    """Trains (or restores) every family and the fingerprint AE, and samples every split."""
    real = load_real(config)
    root = config.cache_root()
    ae_dir = None if root is None else root / f"ae-{_key(zoo_settings(config))}"
    progress(f"fingerprint AE: {config.ae_steps} steps on {len(real['train'])} real patches")
    ae, ae_history = train_fingerprint_ae(
        real["train"],
        steps=config.ae_steps,
        width=config.zoo_width,
        bottleneck=config.ae_bottleneck,
        batch_size=config.zoo_batch,
        seed=config.zoo_seed,
        workdir=ae_dir,
        checkpoint_every=250 if ae_dir is not None else 0,
        progress=config.progress,
    )
    info = {"fingerprint_ae": {"steps": config.ae_steps, "final": ae_history[-1] if ae_history else None}}
    fakes = {}
    for name in config.families:
        settings = zoo_settings(config, name)
        family_dir = None if root is None else root / f"{name}-{_key(settings)}"
        samples_path = None if family_dir is None else family_dir / "samples.npz"
        if samples_path is not None and samples_path.exists():
            with np.load(samples_path) as z:
                stored = {k: z[k] for k in z.files}
            info[name] = json.loads((family_dir / "info.json").read_text())
        else:
            steps = settings["steps"]
            progress(f"{name}: {steps} steps")
            trained = train_family(
                name,
                real["train"],
                steps=steps,
                width=config.zoo_width,
                batch_size=config.zoo_batch,
                latent_dim=config.latent_dim,
                seed=config.zoo_seed,
                workdir=None if family_dir is None else family_dir / "run",
                checkpoint_every=250 if family_dir is not None else 0,
                progress=config.progress,
            )
            stored = _sample_all(trained.model, name, real, config)
            info[name] = {
                "kind": FAMILIES[name].kind,
                "steps": steps,
                "seconds": trained.seconds,
                "resumed_from": trained.start_step,
                "final": trained.history[-1] if trained.history else None,
            }
            if samples_path is not None:
                _atomic_npz(samples_path, stored)
                (family_dir / "info.json").write_text(json.dumps(info[name], indent=1))
        fakes[name] = {split: from_uint8(stored[split]) for split in SPLITS}
    return Zoo(real, fakes, ae, info)


def zoo_quality(zoo: Zoo, config: GanfpConfig) -> dict:
    """Per family: Frechet distance to the real test patches, fingerprint spectrum and its peaks."""
    features = feature_network(0)
    real_feat = features(zoo.real["test"])
    floor = float(frechet_distance(features(zoo.real["val"]), real_feat))
    spectra = {"real": mean_spectrum(fingerprints(zoo.ae, zoo.real["test"]))}
    rows = {}
    for name in config.families:
        test = zoo.fakes[name]["test"]
        spectra[name] = mean_spectrum(fingerprints(zoo.ae, test))
        rows[name] = {
            "kind": FAMILIES[name].kind,
            "frechet": float(frechet_distance(features(test), real_feat)),
            "peak_contrast_2": peak_contrast(spectra[name], 2),
            "peak_contrast_4": peak_contrast(spectra[name], 4),
        }
    real_row = {
        "peak_contrast_2": peak_contrast(spectra["real"], 2),
        "peak_contrast_4": peak_contrast(spectra["real"], 4),
    }
    return {"frechet_floor": floor, "real": real_row, "families": rows, "spectra": spectra}
