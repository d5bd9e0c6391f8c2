"""GAN objectives over discriminator logits, and the reconstruction loss of autoencoders.

Each objective is a (discriminator loss, generator loss) pair of pure functions of logits, so a
train step can pick one by name (`gan_losses(name)`) and a GAN "family" can differ from another
only in its loss:

- non-saturating (Goodfellow et al. 2014, arXiv 1406.2661, section 3; the DCGAN default, arXiv
  1511.06434): D minimizes -log D(x) - log(1 - D(G(z))), G minimizes -log D(G(z)), with
  D = sigmoid(logit), written with softplus so large logits do not overflow;
- hinge (Lim & Ye 2017, arXiv 1705.02894; Miyato et al. 2018, arXiv 1802.05957, with spectral norm):
  D minimizes E relu(1 - D(x)) + E relu(1 + D(G(z))), G minimizes -E D(G(z));
- least squares (LSGAN, Mao et al. 2017, arXiv 1611.04076, the 0-1-1 coding of their eq. 9):
  D minimizes 1/2 E (D(x) - 1)^2 + 1/2 E D(G(z))^2, G minimizes 1/2 E (D(G(z)) - 1)^2.

All losses are means over the batch (real and fake batches may differ in size) and work under
jit, grad and vmap.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "GAN_LOSSES",
    "gan_losses",
    "hinge_d_loss",
    "hinge_g_loss",
    "lsgan_d_loss",
    "lsgan_g_loss",
    "mse_reconstruction",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
]


def _logits(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating-point logits, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: a GAN loss needs at least one logit")
    return x


def nonsaturating_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """E softplus(-D(x)) + E softplus(D(G(z))) = -E log sigmoid(D(x)) - E log(1 - sigmoid(D(G(z))))."""
    real, fake = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def nonsaturating_g_loss(fake_logits: jax.Array) -> jax.Array:
    """E softplus(-D(G(z))) = -E log sigmoid(D(G(z))): strong gradients while D rejects the fakes."""
    return jnp.mean(jax.nn.softplus(-_logits(fake_logits, "fake_logits")))


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """E relu(1 - D(x)) + E relu(1 + D(G(z)))."""
    real, fake = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
    """-E D(G(z))."""
    return -jnp.mean(_logits(fake_logits, "fake_logits"))


def lsgan_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """1/2 E (D(x) - 1)^2 + 1/2 E D(G(z))^2 (targets: real 1, fake 0)."""
    real, fake = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return 0.5 * jnp.mean((real - 1.0) ** 2) + 0.5 * jnp.mean(fake**2)


def lsgan_g_loss(fake_logits: jax.Array) -> jax.Array:
    """1/2 E (D(G(z)) - 1)^2."""
    return 0.5 * jnp.mean((_logits(fake_logits, "fake_logits") - 1.0) ** 2)


def mse_reconstruction(reconstruction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over every element: the autoencoders' (re-synthesizer, fingerprint AE) loss."""
    reconstruction, target = jnp.asarray(reconstruction), jnp.asarray(target)
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {reconstruction.shape} and target {target.shape} must have one shape")
    return jnp.mean((reconstruction - target) ** 2)


LossPair = tuple[Callable[[jax.Array, jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]

GAN_LOSSES: dict[str, LossPair] = {
    "nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "lsgan": (lsgan_d_loss, lsgan_g_loss),
}


def gan_losses(name: str) -> LossPair:
    """The (discriminator loss, generator loss) pair called `name` (one of GAN_LOSSES)."""
    if name not in GAN_LOSSES:
        raise ValueError(f"loss={name!r} is not a GAN loss; use one of {sorted(GAN_LOSSES)}")
    return GAN_LOSSES[name]
