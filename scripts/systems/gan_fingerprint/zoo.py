"""Training the generator zoo and the fingerprint autoencoder, sampling from it, and a fixed feature net.

Every model trains through the house `Trainer` (`frugal.scripts.harness`), so runs checkpoint with
orbax and resume bit-identically (batches and latents are functions of the step number):

- a GAN family (`frugal.models.gan_zoo.FAMILIES`, kind "gan"): one jit-compiled step updates the
  discriminator, then the generator, each with its own Adam (lr 2e-4, betas (0.5, 0.999): the DCGAN
  recipe, Radford et al. arXiv 1511.06434, section 4), with the family's loss
  (`frugal.transforms.gan_losses`); the generator's step reuses the step's latents, which are drawn
  on the host from (seed, step) and travel with the batch (so the compiled step holds no PRNG);
- a re-synthesizer family (kind "resynth") and the `FingerprintAE`: one Adam, MSE reconstruction of
  real patches.

`sample_family` draws N images from a trained family (deterministic for a seed). `feature_network`
is the fixed embedding for Frechet distances (`frugal.transforms.frechet`): a seeded, randomly
initialized conv net, a "random network" embedding of the kind Naeem et al. (ICML 2020, arXiv
2002.09797) propose for evaluating generators on data unlike ImageNet. We chose it over the fingerprint
AE's encoder because it is trained on nothing: it favours neither the real patches the AE learned
from nor any generator, costs no training, and is identical in every run with the same seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models.gan_zoo import FAMILIES, FingerprintAE, Generator, Resynthesizer, init_model, make_family
from frugal.scripts.data import BatchSampler
from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step
from frugal.transforms.gan_losses import gan_losses, mse_reconstruction
from frugal.transforms.initializers import Conv, variance_scaling

# One optimizer object each, so Trainers of equal models share one compiled step (the harness keys
# its compile cache on the graph structure, which includes the optimizer).
DCGAN_ADAM = optax.adam(2e-4, b1=0.5, b2=0.999)
AE_ADAM = optax.adam(1e-3)


class GANState(nnx.Module):
    """A generator and a discriminator with one optimizer each: the object graph a GAN `Trainer` runs."""

    def __init__(self, generator: Generator, discriminator: nnx.Module, *, g_tx=DCGAN_ADAM, d_tx=DCGAN_ADAM):
        self.generator = generator
        self.discriminator = discriminator
        self.g_optimizer = nnx.Optimizer(generator, g_tx, wrt=nnx.Param)
        self.d_optimizer = nnx.Optimizer(discriminator, d_tx, wrt=nnx.Param)


_GAN_STEPS: dict[str, Callable] = {}


def gan_step(loss: str) -> Callable:
    """The Trainer step for a GAN trained with `loss` (a `gan_losses` name): D update, then G update.

    The batch is {"image": real images, "z": latents}. The discriminator sees the real images and
    G(z); the generator then descends its loss on D(G(z)) for the same z against the updated D.
    Returns both losses and D's mean probability on real and fake images.
    """
    if loss not in _GAN_STEPS:
        d_loss_fn, g_loss_fn = gan_losses(loss)
        params = nnx.DiffState(0, nnx.Param)

        def step(state: GANState, batch, rng):
            real, z = batch["image"], batch["z"]
            generator, discriminator = state.generator, state.discriminator
            fake = jax.lax.stop_gradient(generator(z))

            def d_objective(d):
                real_logits, fake_logits = d(real), d(fake)
                return d_loss_fn(real_logits, fake_logits), (real_logits, fake_logits)

            (d_loss, (real_logits, fake_logits)), d_grads = nnx.value_and_grad(
                d_objective, argnums=params, has_aux=True
            )(discriminator)
            state.d_optimizer.update(discriminator, d_grads)

            g_loss, g_grads = nnx.value_and_grad(lambda g, d: g_loss_fn(d(g(z))), argnums=params)(
                generator, discriminator
            )
            state.g_optimizer.update(generator, g_grads)
            return {
                "d_loss": d_loss,
                "g_loss": g_loss,
                "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
                "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
            }

        _GAN_STEPS[loss] = step
    return _GAN_STEPS[loss]


def _reconstruction_loss(model, batch, rng, constants):
    return mse_reconstruction(model(batch["image"]), batch["image"])


AE_STEP = loss_step(_reconstruction_loss)


def _check_patches(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square RGB patches (N, S, S, 3), got shape {images.shape}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"images must lie in [0, 1], got [{images.min():.3g}, {images.max():.3g}]")
    return images


def patch_batches(images: np.ndarray, batch_size: int, seed: int, *, latent_dim: int | None = None):
    """batch_at(step, rows) -> {"image": ...} (seeded per-epoch shuffles) plus, with `latent_dim`,
    "z": standard-normal latents; both are functions of (seed, step), so a resumed run sees the same."""
    sampler = BatchSampler(len(images), batch_size, seed)

    def batch_at(step: int, rows: slice):
        batch = {"image": images[sampler.indices(step)[rows]]}
        if latent_dim is not None:
            z = np.random.default_rng([seed, step, 1]).standard_normal((batch_size, latent_dim), np.float32)
            batch["z"] = z[rows]
        return batch

    return batch_at


@dataclasses.dataclass
class TrainedFamily:
    name: str
    model: nnx.Module  # Generator or Resynthesizer, in eval mode
    discriminator: nnx.Module | None
    history: list[dict]
    seconds: float
    start_step: int  # > 0 when the run resumed from a checkpoint


def _trainer_config(steps, seed, checkpoint_every, log_every, progress, label) -> TrainerConfig:
    return TrainerConfig(
        num_steps=steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        progress=progress,
        progress_label=label,
    )


def train_family(
    name: str,
    images: np.ndarray,
    *,
    steps: int,
    width: int = 32,
    batch_size: int = 64,
    latent_dim: int = 64,
    seed: int = 0,
    init_key: jax.Array | None = None,
    workdir: str | Path | None = None,
    checkpoint_every: int = 0,
    log_every: int = 50,
    progress: bool = False,
) -> TrainedFamily:
    """Trains family `name` (a `FAMILIES` key) on real patches `images` (N, S, S, 3) in [0, 1].

    GANs learn to imitate the patches; re-synthesizers learn to reconstruct them. `seed` sets the
    batch order and latents, and the initialization unless `init_key` (a PRNG key) is given. With
    `workdir`, a finished run is a cache and an interrupted one resumes from its last checkpoint.
    """
    if name not in FAMILIES:
        raise ValueError(f"family={name!r} is not known; use one of {sorted(FAMILIES)}")
    images = _check_patches(images)
    family = FAMILIES[name]
    model, discriminator = make_family(
        name,
        width=width,
        image_size=images.shape[1],
        latent_dim=latent_dim,
        seed=seed if init_key is None else init_key,
    )
    gan = family.kind == "gan"
    model.train()
    if gan:
        discriminator.train()
        state, step_fn = GANState(model, discriminator), gan_step(family.loss)
    else:
        state, step_fn = TrainState(model, AE_ADAM), AE_STEP
    trainer = Trainer(
        state,
        step_fn,
        config=_trainer_config(steps, seed, checkpoint_every, log_every, progress, name),
        workdir=workdir,
    )
    result = trainer.run(patch_batches(images, batch_size, seed, latent_dim=latent_dim if gan else None), batch_size)
    if gan:
        model, discriminator = result.state.generator, result.state.discriminator
        discriminator.eval()
    else:
        model = result.state.model
    model.eval()
    return TrainedFamily(name, model, discriminator, result.history, result.seconds, result.start_step)


def train_fingerprint_ae(
    images: np.ndarray,
    *,
    steps: int,
    width: int = 32,
    bottleneck: int = 16,
    batch_size: int = 64,
    seed: int = 0,
    init_key: jax.Array | None = None,
    workdir: str | Path | None = None,
    checkpoint_every: int = 0,
    log_every: int = 50,
    progress: bool = False,
) -> tuple[FingerprintAE, list[dict]]:
    """Trains the fingerprint extractor's autoencoder on REAL patches with MSE; returns it (eval mode)
    and the logged history. `seed` and `init_key` as in `train_family`."""
    images = _check_patches(images)
    model = init_model(FingerprintAE, seed if init_key is None else init_key, width=width, bottleneck=bottleneck)
    trainer = Trainer(
        TrainState(model, AE_ADAM),
        AE_STEP,
        config=_trainer_config(steps, seed, checkpoint_every, log_every, progress, "fingerprint AE"),
        workdir=workdir,
    )
    result = trainer.run(patch_batches(images, batch_size, seed), batch_size)
    trained = result.state.model
    trained.eval()
    return trained, result.history


@nnx.jit
def _forward(model, x):
    return model(x)


def map_batches(model: nnx.Module, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """model(inputs) in eval mode, in fixed-size chunks (the last one padded: one compiled shape)."""
    model = nnx.clone(model)
    model.eval()
    outputs = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        pad = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
        outputs.append(np.asarray(_forward(model, jnp.asarray(padded)))[: len(chunk)])
    return np.concatenate(outputs)


def sample_family(
    model: nnx.Module, n: int, *, seed: int, real_images: np.ndarray | None = None, batch_size: int = 256
) -> np.ndarray:
    """`n` images (n, S, S, 3) in [0, 1] from a trained family; the same seed gives the same images.

    A `Generator` maps standard-normal latents drawn by `np.random.default_rng(seed)`; a `Resynthesizer` re-synthesizes
    `n` of `real_images` (chosen by the seed, without replacement while there are enough), which
    should be patches the detector has not trained on. The model is not modified (eval-mode copy).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    if isinstance(model, Generator):
        z = np.random.default_rng(seed).standard_normal((n, model.latent_dim), np.float32)
        return map_batches(model, z, batch_size)
    if isinstance(model, Resynthesizer):
        if real_images is None:
            raise ValueError("real_images is required to sample from a Resynthesizer (it re-synthesizes them)")
        real_images = _check_patches(real_images)
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(real_images), n, replace=n > len(real_images))
        return map_batches(model, real_images[idx], batch_size)
    raise ValueError(f"model must be a Generator or a Resynthesizer, got {type(model).__name__}")


def fingerprints(ae: FingerprintAE, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """F = x - AE(x) for every image (N, H, W, 3), with the AE in eval mode."""
    images = np.asarray(images, np.float32)
    return images - map_batches(ae, images, batch_size)


class RandomFeatureNet(nnx.Module):
    """Three ReLU conv stages (3x3 width; 4x4/2 2 width; 4x4/2 4 width), He-initialized and never trained;
    the features are the spatial means of every stage, concatenated (7 width values), so they keep
    fine-scale statistics (first stage) as well as coarser structure."""

    def __init__(self, width: int = 16, *, rngs: nnx.Rngs):
        he = variance_scaling(2.0, "fan_in", "normal")
        conv = lambda i, o, k, s: Conv(i, o, (k, k), strides=(s, s), padding="SAME", kernel_init=he, rngs=rngs)
        self.convs = nnx.List([conv(3, width, 3, 1), conv(width, 2 * width, 4, 2), conv(2 * width, 4 * width, 4, 2)])

    def __call__(self, x: jax.Array) -> jax.Array:
        h, pooled = x - 0.5, []
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
            pooled.append(jnp.mean(h, axis=(1, 2)))
        return jnp.concatenate(pooled, axis=-1)


def feature_network(
    seed: int | jax.Array = 0, *, width: int = 16, batch_size: int = 256
) -> Callable[[np.ndarray], np.ndarray]:
    """A fixed embedding `images (N, H, W, 3) in [0, 1] -> features (N, 7 width)` for Frechet distances:
    a `RandomFeatureNet` initialized from `seed` (an int or a PRNG key; see the module doc for why a
    random network)."""
    net = init_model(RandomFeatureNet, seed, width=width)

    def features(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
            raise ValueError(f"images must be a non-empty (N, H, W, 3) array, got shape {images.shape}")
        return map_batches(net, images, batch_size)

    return features
