"""The fake-image detector, its training variants, and the train-select-test protocol of one run.

The detector is a CIFAR-style ResNet (8 or 20 layers, `frugal.models.resnet`) with one logit and
binary cross-entropy, trained from scratch: the paper fine-tunes an ImageNet ResNet-50 with one
logit and BCE (arXiv 2212.13466, the authors' training code), and no ImageNet weights exist offline.
Batches are balanced, half real and half fake (the reference's random balanced sampling); images are
fed in [0, 1] without normalization, as the reference does.

Methods (`METHODS`), each a detector input and a training augmentation:

- "none": RGB, no augmentation (the paper's baseline);
- "blur_jpeg": CNNDetection's Blur+JPEG (0.5) on every training image (Wang et al. CVPR 2020, arXiv
  1912.11035; sigma ~ U[0, 3], Pillow JPEG quality ~ U{30..100}; on the host, `jpeg.blur_jpeg`);
- "image_noise": the authors' image-domain noise control, fakes only (`image_augment.image_noise`);
- "frequency": a high-frequency band of the spectrum rescaled, every image
  (`image_augment.frequency_augment`, the BiHPF / FrePGAN family);
- "fingerprint": the paper's method, fakes' fingerprints x - AE(x) perturbed
  (`frugal.transforms.fingerprint`, the AE frozen inside the training state);
- "npr": NPR input, x - nearest_up(nearest_down(x)) (Tan et al. CVPR 2024, arXiv 2312.10461);
- "npr_fingerprint": NPR input, trained on fingerprint-augmented images (beyond the paper).

Every augmented batch is rounded back onto the 8-bit grid before the detector sees it: real and
generated test images are 8-bit files, so an augmentation that left values off the grid would teach
the detector a cue no test image has.

Model selection: every `eval_every` steps the detector is scored on the validation set (real
validation patches against a validation family's fakes) by the mean of Acc and AP, the criterion
the authors use, but on a family that is never tested; the best step's weights are kept.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models.resnet import cifar_resnet8, cifar_resnet20
from frugal.scripts.data import BatchSampler
from frugal.scripts.harness import Trainer, TrainerConfig
from frugal.scripts.systems.gan_fingerprint.config import METHODS, GanfpConfig
from frugal.scripts.systems.gan_fingerprint.jpeg import blur_jpeg
from frugal.scripts.systems.gan_fingerprint.metrics import detection_metrics
from frugal.scripts.systems.gan_fingerprint.zoo import map_batches
from frugal.transforms.fingerprint import PerturbConfig, perturb_fingerprints
from frugal.transforms.image_augment import frequency_augment, image_noise, npr_residual

# method -> (detector input, training augmentation)
METHOD_PARTS: dict[str, tuple[str, str]] = {
    "none": ("rgb", "none"),
    "blur_jpeg": ("rgb", "blur_jpeg"),
    "image_noise": ("rgb", "image_noise"),
    "frequency": ("rgb", "frequency"),
    "fingerprint": ("rgb", "fingerprint"),
    "npr": ("npr", "none"),
    "npr_fingerprint": ("npr", "fingerprint"),
}
assert tuple(METHOD_PARTS) == METHODS
INPUTS = ("rgb", "npr")
DEPTHS = {8: cifar_resnet8, 20: cifar_resnet20}


def check_method(method: str) -> tuple[str, str]:
    if method not in METHOD_PARTS:
        raise ValueError(f"method={method!r} is not known; use one of {list(METHODS)}")
    return METHOD_PARTS[method]


class Detector(nnx.Module):
    """images (N, H, W, 3) in [0, 1] -> one logit per image (> 0: fake)."""

    def __init__(self, *, depth: int = 8, width: int = 16, input: str = "rgb", rngs: nnx.Rngs):
        if depth not in DEPTHS:
            raise ValueError(f"depth={depth!r} must be one of {sorted(DEPTHS)}")
        if input not in INPUTS:
            raise ValueError(f"input={input!r} must be one of {INPUTS}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width={width!r} must be a positive integer")
        self.input = input
        self.backbone = DEPTHS[depth](num_classes=1, width=width, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"Detector expects RGB images (N, H, W, 3), got shape {images.shape}")
        x = npr_residual(images) if self.input == "npr" else images
        return self.backbone(x)[:, 0]


class DetectorState(nnx.Module):
    """The detector, its optimizer, and (for fingerprint augmentation) the frozen fingerprint AE."""

    def __init__(self, model: Detector, tx: optax.GradientTransformation, ae: nnx.Module | None = None):
        self.model = model
        self.optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        self.ae = ae


def quantize(images: jax.Array) -> jax.Array:
    """Rounds [0, 1] images onto the 8-bit grid (k / 255)."""
    return jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0) / 255.0


_STEPS: dict = {}


def detector_step(augment: str, prob: float, perturb: PerturbConfig | None) -> Callable:
    """The Trainer step of a detector trained with in-graph augmentation `augment` ("none" and
    "blur_jpeg" augment nothing in the graph). One object per setting, so seeds share a compile."""
    if augment == "blur_jpeg":  # applied on the host: the compiled step is the plain one
        augment = "none"
    key = (augment, float(prob), perturb)
    if key in _STEPS:
        return _STEPS[key]

    def step(state: DetectorState, batch, rng):
        images, labels = batch["image"], batch["label"]
        if augment == "fingerprint":
            ae = state.ae
            images = perturb_fingerprints(
                rng, images, labels.astype(jnp.int32), lambda x: jax.lax.stop_gradient(ae(x)), config=perturb
            )
        elif augment == "image_noise":
            images = image_noise(rng, images, labels.astype(jnp.int32), prob=prob)
        elif augment == "frequency":
            images = frequency_augment(rng, images, prob=prob)
        images = quantize(images)
        model = state.model
        model.train()

        def loss_fn(model):
            logits = model(images)
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        state.optimizer.update(model, grads)
        return {"loss": loss, "accuracy": jnp.mean((logits > 0) == (labels > 0.5))}

    _STEPS[key] = step
    return step


_DEFAULTS = GanfpConfig()  # one source of truth: the experiment's defaults are the detector's


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """How one detector trains. Defaults are `GanfpConfig`'s (`experiment.detector_settings` maps the
    config's fields here); the AdamW weight decay and warm-up have no config knob."""

    depth: int = _DEFAULTS.depth
    width: int = _DEFAULTS.det_width
    steps: int = _DEFAULTS.det_steps
    batch_size: int = _DEFAULTS.det_batch
    learning_rate: float = _DEFAULTS.det_lr
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    eval_every: int = _DEFAULTS.eval_every
    aug_prob: float = _DEFAULTS.aug_prob
    perturb: PerturbConfig = _DEFAULTS.perturb_config()

    def __post_init__(self):
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size={self.batch_size} must be even and >= 2 (half real, half fake)")
        if self.steps < 1 or self.eval_every < 1:
            raise ValueError(f"steps={self.steps} and eval_every={self.eval_every} must be >= 1")


_OPTIMIZERS: dict = {}


def _optimizer(settings: DetectorSettings) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay (one object per setting: seeds share a compiled step)."""
    key = (settings.learning_rate, settings.weight_decay, settings.warmup_steps, settings.steps)
    if key not in _OPTIMIZERS:
        warmup = min(settings.warmup_steps, settings.steps // 2)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, settings.learning_rate, warmup, max(settings.steps, warmup + 1)
        )
        _OPTIMIZERS[key] = optax.adamw(schedule, weight_decay=settings.weight_decay)
    return _OPTIMIZERS[key]


def balanced_batches(
    real: np.ndarray, fake: np.ndarray, batch_size: int, seed: int, *, host_augment: str = "none", prob: float = 0.5
):
    """batch_at(step, rows): batch_size / 2 real then batch_size / 2 fake images (labels 0 / 1), each
    class in seeded per-epoch shuffles; with host_augment "blur_jpeg", every image goes through
    CNNDetection's Blur+JPEG with an RNG drawn from (seed, step), so a resumed run sees the same."""
    half = batch_size // 2
    if len(real) < 1 or len(fake) < 1:
        raise ValueError("detector training needs at least one real and one fake image")
    real_sampler = BatchSampler(len(real), half, seed)
    fake_sampler = BatchSampler(len(fake), half, seed + 7919)
    labels = np.r_[np.zeros(half, np.float32), np.ones(half, np.float32)]

    def batch_at(step: int, rows: slice):
        images = np.concatenate([real[real_sampler.indices(step)], fake[fake_sampler.indices(step)]])
        if host_augment == "blur_jpeg":
            images = blur_jpeg(np.random.default_rng([seed, step, 3]), images, prob)
        return {"image": images[rows], "label": labels[rows]}

    return batch_at


def predict(model: Detector, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of `images` with the detector in eval mode (the model is not modified)."""
    return map_batches(model, np.asarray(images, np.float32), batch_size)


def score_set(model: Detector, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Acc and AP of telling `fake` from `real`."""
    logits = np.concatenate([predict(model, real), predict(model, fake)])
    labels = np.r_[np.zeros(len(real), np.int64), np.ones(len(fake), np.int64)]
    return detection_metrics(labels, logits)


@dataclasses.dataclass
class DetectorRun:
    model: Detector  # the selected (best validation) weights, eval mode
    best_step: int
    val: dict  # validation metrics at the best step
    history: list[dict]
    seconds: float


def train_detector(
    method: str,
    real_train: np.ndarray,
    fake_train: np.ndarray,
    real_val: np.ndarray,
    fake_val: np.ndarray,
    *,
    settings: DetectorSettings,
    seed: int,
    ae: nnx.Module | None = None,
    progress: bool = False,
) -> DetectorRun:
    """Trains one detector of `method` and keeps the weights with the best validation (Acc + AP) / 2."""
    input_kind, augment = check_method(method)
    if augment == "fingerprint" and ae is None:
        raise ValueError(f"method={method!r} perturbs fingerprints and needs the fingerprint autoencoder (ae=)")
    model = Detector(depth=settings.depth, width=settings.width, input=input_kind, rngs=nnx.Rngs(seed))
    if ae is not None:
        ae = nnx.clone(ae)
        ae.eval()
    state = DetectorState(model, _optimizer(settings), ae if augment == "fingerprint" else None)
    best = {"score": -np.inf, "step": 0, "state": None, "val": None}
    evaluations = [0]

    def eval_fn(state: DetectorState) -> dict:
        evaluations[0] += 1
        metrics = score_set(state.model, real_val, fake_val)
        score = (metrics["acc"] + metrics["ap"]) / 2
        if score > best["score"]:
            best.update(
                score=score,
                step=evaluations[0] * settings.eval_every,
                state=jax.tree.map(np.array, nnx.state(state.model)),  # copies: the step donates its buffers
                val=metrics,
            )
        return {"val_ap": metrics["ap"], "val_acc": metrics["acc"]}

    trainer = Trainer(
        state,
        detector_step(augment, settings.aug_prob, settings.perturb if augment == "fingerprint" else None),
        config=TrainerConfig(
            num_steps=settings.steps,
            seed=seed,
            log_every=settings.eval_every,
            eval_every=settings.eval_every,
            progress=progress,
            progress_label=method,
        ),
        eval_fn=eval_fn,
    )
    start = time.perf_counter()
    batches = balanced_batches(
        real_train, fake_train, settings.batch_size, seed, host_augment=augment, prob=settings.aug_prob
    )
    result = trainer.run(batches, settings.batch_size)
    trained = result.state.model
    best_step = min(best["step"], settings.steps)
    nnx.update(trained, best["state"])
    trained.eval()
    return DetectorRun(trained, best_step, best["val"], result.history, time.perf_counter() - start)
