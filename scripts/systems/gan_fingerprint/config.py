"""Settings of `frugal ganfp zoo | train | eval` (flags derived from these fields by `frugal.scripts.configs`).

`quick` is the tests' size (seconds, numbers meaningless), `tour` a short run, not timed (a 4-family zoo
trained briefly, one seed; `frugal tour` itself only points to the command, since the zoo alone
takes longer than the tour's budget), `full` the command's default (the wheels' photos only), `debian`
the full study with 21 more real photos from two Debian packages (the headline table in this folder's
README; `photos.py` says which and why).

The protocol follows the paper's (Wang et al., arXiv 2212.13466) in the roles of its parts: the
detector trains on one generator family (ProGAN's role; 2 and 4 families for the 2/4-class analogue),
picks its checkpoint on a held-out *validation* family (the authors pick epochs on the test GANs; we do
not), and is tested on every family, the mean over the unseen ones being the headline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.models.gan_zoo import FAMILIES
from frugal.scripts.configs import check_presets, knob
from frugal.scripts.data import cache_folder
from frugal.scripts.systems.gan_fingerprint.photos import PHOTO_GROUPS, PHOTOS, expand_photo_names, photo_record
from frugal.transforms.fingerprint import MIX_FROM, MIX_WEIGHTS, MODES, PerturbConfig

# What a detector sees and how its training batches are augmented (see `detector.METHODS`).
METHODS = ("none", "blur_jpeg", "image_noise", "frequency", "fingerprint", "npr", "npr_fingerprint")


@dataclasses.dataclass(frozen=True)
class GanfpConfig:
    """One GAN-image detection study: real patches, the generator zoo, detectors, protocol."""

    # Real images
    size: int = knob(32, "patch side in pixels", choices=(32, 64))
    photos: tuple[str, ...] = knob(
        ("bundled",),
        "real photographs, split by photo into train / val / test: names or the groups bundled (7 colour photos "
        "in the scikit-image / scikit-learn wheels) and debian (21 colour wallpapers: apt install "
        "mate-backgrounds plasma-workspace-wallpapers; needs --patch-short-side, e.g. 400)",
        choices=(*PHOTO_GROUPS, *(p.name for p in PHOTOS)),
    )
    patch_short_side: int | None = knob(
        None, "resize each photo to this short side before cutting patches (none: native resolution)"
    )
    patch_stride: int = knob(8, "step between patches (overlapping patches when < size)")
    # The zoo
    families: tuple[str, ...] = knob(tuple(FAMILIES), "generator families in the zoo", choices=tuple(FAMILIES))
    zoo_width: int = knob(32, "generator / discriminator / re-synthesizer width")
    latent_dim: int = knob(64, "GAN latent size")
    gan_steps: int = knob(1500, "training steps of each GAN family (D then G per step)")
    resynth_steps: int = knob(600, "training steps of each re-synthesizer family")
    ae_steps: int = knob(1000, "training steps of the fingerprint autoencoder (on real training patches)")
    ae_bottleneck: int = knob(16, "channels of the fingerprint AE's H/4 code")
    zoo_batch: int = knob(64, "batch size of zoo training")
    zoo_seed: int = knob(0, "seed of the zoo (initialization, batches, samples)")
    train_fakes: int = knob(4000, "fakes sampled per family for detector training")
    eval_fakes: int = knob(1500, "fakes (and at most this many real patches) per family in validation and test sets")
    # Protocol
    train_families: tuple[str, ...] = knob(("tconv",), "families the detector trains on", choices=tuple(FAMILIES))
    val_family: str = knob(
        "nearest", "family that picks the detector's checkpoint (never a test family)", choices=tuple(FAMILIES)
    )
    methods: tuple[str, ...] = knob(METHODS, "detector variants compared", choices=METHODS)
    seeds: tuple[int, ...] = knob((0, 1, 2), "detector seeds (initialization, batch order, augmentation draws)")
    # Detector
    depth: int = knob(8, "detector ResNet depth (CIFAR-style: 8 or 20)", choices=(8, 20))
    det_width: int = knob(16, "detector stem width (stages x1, x2, x4)")
    det_steps: int = knob(400, "detector training steps (the in-family loss is near 0 by step 200)")
    det_batch: int = knob(64, "detector batch size (half real, half fake: the reference's balanced sampling)")
    det_lr: float = knob(1e-3, "detector peak learning rate (AdamW, warm-up + cosine)")
    eval_every: int = knob(50, "steps between validation checks (the best one is kept)")
    aug_prob: float = knob(0.5, "probability an augmentation touches an eligible image (the reference's 50%)")
    # Fingerprint perturbation (the reference's ranges are the defaults)
    perturb_modes: tuple[str, ...] = knob(
        ("mut", "mix", "noise"), "fingerprint perturbations, one drawn per image", choices=MODES[1:]
    )
    mut_range: float = knob(5.0, "k of 'mut': F * m, m ~ U[-k, k] (reference 'Mut5')")
    mix_min_weight: float = knob(0.5, "own weight w ~ U[p, 1] of 'mix' (reference 'Mix2_50')")
    mix_weight: str = knob(
        "convex", "mix weights: convex or the reference's quirk (other weight 1)", choices=MIX_WEIGHTS
    )
    mix_from: str = knob("fakes", "where the mix partner comes from", choices=MIX_FROM)
    test_root: str | None = knob(
        None,
        "a folder of your own test generators in the CNNDetection layout (<gan>/[<class>/]0_real|1_fake), each "
        "tested by every detector beside the zoo (images centre-cropped and resized to size)",
    )
    # `frugal ganfp train`
    train_method: str = knob("fingerprint", "`frugal ganfp train`: the method to train", choices=METHODS)
    cache_dir: str | None = knob(
        "auto",
        "where patches, the zoo, its samples and detector results are cached by recipe "
        "(auto: $XDG_CACHE_HOME/frugal/gan_fingerprint or ~/.cache/frugal/gan_fingerprint; none: no cache)",
    )
    outdir: str | None = knob("reports/gan_fingerprint", "where ganfp_*.{json,md,png} go (none: nowhere)")
    progress: bool = knob(True, "show progress bars")

    def __post_init__(self):
        for name in ("gan_steps", "resynth_steps", "ae_steps", "zoo_batch", "train_fakes", "eval_fakes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("zoo_width", "latent_dim", "ae_bottleneck", "det_width", "det_steps", "det_batch", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.det_batch % 2:
            raise ValueError(f"det_batch={self.det_batch} must be even (half real, half fake)")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if not self.methods:
            raise ValueError("methods must name at least one method")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families={self.families} names a family twice")
        if not self.train_families:
            raise ValueError("train_families must name at least one family")
        missing = [f for f in (*self.train_families, self.val_family) if f not in self.families]
        if missing:
            raise ValueError(f"{missing} are not in the zoo (families={list(self.families)}); add them with --families")
        if self.val_family in self.train_families:
            raise ValueError(
                f"val_family={self.val_family!r} is a training family; pick a family the detector does not see"
            )
        if not self.test_families():
            raise ValueError(
                "no family is left to test on: the zoo needs families beyond the training and validation ones"
            )
        if not 0.0 <= self.aug_prob <= 1.0:
            raise ValueError(f"aug_prob={self.aug_prob} must lie in [0, 1]")
        if not self.det_lr > 0:
            raise ValueError(f"det_lr={self.det_lr} must be > 0")
        if self.patch_stride < 1:
            raise ValueError(f"patch_stride={self.patch_stride} must be >= 1")
        large = [n for n in expand_photo_names(self.photos) if min(photo_record(n).height, photo_record(n).width) > 800]
        if large and (self.patch_short_side is None or self.patch_short_side > 800):
            raise ValueError(
                f"photos {large[:3]}{'...' if len(large) > 3 else ''} are over 800 px on the short side: at "
                f"patch_short_side={self.patch_short_side} they give hundreds of thousands of patches each; "
                "pass --patch-short-side (e.g. 400)"
            )
        self.perturb_config()  # validates the perturbation knobs

    def photo_names(self) -> tuple[str, ...]:
        """The real photographs, groups expanded (`photos.expand_photo_names`)."""
        return expand_photo_names(self.photos)

    def test_families(self) -> tuple[str, ...]:
        """The unseen families: neither trained on nor used for model selection."""
        return tuple(f for f in self.families if f not in self.train_families and f != self.val_family)

    def perturb_config(self) -> PerturbConfig:
        if not self.perturb_modes:
            raise ValueError(f"perturb_modes must name at least one of {MODES[1:]}")
        return PerturbConfig(
            mode=tuple(self.perturb_modes),
            prob=self.aug_prob,
            mut_range=self.mut_range,
            mix_min_weight=self.mix_min_weight,
            mix_weight=self.mix_weight,
            mix_from=self.mix_from,
        )

    def cache_root(self) -> Path | None:
        return cache_folder(self.cache_dir, "gan_fingerprint")


PRESETS = check_presets(
    GanfpConfig,
    {
        # The tests' size: a 3-family zoo of a few steps, tiny detectors (numbers meaningless).
        "quick": GanfpConfig(
            patch_short_side=96,
            patch_stride=16,
            families=("tconv", "nearest", "resynth_shuffle"),
            zoo_width=8,
            latent_dim=16,
            gan_steps=4,
            resynth_steps=4,
            ae_steps=4,
            ae_bottleneck=4,
            zoo_batch=16,
            train_fakes=64,
            eval_fakes=32,
            methods=("none", "fingerprint", "npr"),
            seeds=(0,),
            det_width=4,
            det_steps=6,
            det_batch=16,
            eval_every=3,
            cache_dir=None,
            outdir=None,
            progress=False,
        ),
        # A short look (not timed): a 4-family zoo trained briefly, one seed, the paper's comparison (no aug,
        # blur+JPEG, fingerprint).
        "tour": GanfpConfig(
            patch_short_side=288,
            patch_stride=16,
            families=("tconv", "nearest", "shuffle", "resynth_shuffle"),
            zoo_width=16,
            gan_steps=150,
            resynth_steps=100,
            ae_steps=150,
            train_fakes=1000,
            eval_fakes=400,
            methods=("none", "blur_jpeg", "fingerprint"),
            seeds=(0,),
            det_width=8,
            det_steps=200,
            eval_every=50,
            outdir=None,
            progress=False,
        ),
        "full": GanfpConfig(),
        # The full study with the larger real class: the wheels' 7 photos and 21 Debian wallpapers (apt install
        # mate-backgrounds plasma-workspace-wallpapers), shrunk to a 400 px short side: 5 test photos, not 1.
        "debian": GanfpConfig(photos=("bundled", "debian"), patch_short_side=400),
    },
)

__all__ = ["METHODS", "PRESETS", "GanfpConfig"]
