"""Discrete-time Gaussian diffusion: noise schedules, the training loss and a DDIM sampler.

The pieces a diffusion refiner needs, as pure functions of arrays (jit-, grad- and vmap-able):

* `linear_schedule` / `cosine_schedule`: the betas of DDPM (Ho et al. 2020, arXiv 2006.11239; the
  linear range 1e-4 .. 0.02 is given for 1,000 steps and is stretched by 1000 / T for T steps, so a
  short chain still ends near pure noise) and of Nichol & Dhariwal (2021, arXiv 2102.09672; s = 0.008,
  betas clipped at 0.999).
* `q_sample`: the forward process, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
* `diffusion_loss`: DDPM training at a random step, with the network predicting either the noise
  (`"eps"`, Ho et al.) or the clean sample (`"x0"`, as ProDiff and shallow-diffusion variants do), L1 or
  L2, averaged over the valid (masked) entries only.
* `sample_timesteps` and `ddim_sample`: DDIM (Song et al. 2021, arXiv 2010.02502) over any number of
  steps, one loop; `ddim_plan` + `ddim_run` take the steps as data, so one compiled sampler serves
  every step count; `eta = 0` is deterministic given the start, `eta = 1` is DDPM-like ancestral
  sampling. `start_step` begins the chain part-way (DiffSpeech's shallow diffusion, Liu et al. 2022,
  arXiv 2105.02446: start from the base model's output noised to step k instead of pure noise).

The denoiser is any `fn(x_t, t) -> prediction` closure (conditioning captured inside it); `t` is a
`[batch]` int32 array of step indices in [0, T).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal.transforms import prng

PARAMETERIZATIONS = ("eps", "x0")
LOSSES = ("l1", "l2")
SCHEDULES = ("linear", "cosine")

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


class Schedule(NamedTuple):
    """A T-step noise schedule. `alpha_bars[t]` is the signal fraction after step t (0-based)."""

    betas: jax.Array
    alpha_bars: jax.Array

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


def _check_steps(num_steps) -> None:
    if not isinstance(num_steps, int | np.integer) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")


def _from_betas(betas: np.ndarray) -> Schedule:
    betas = np.asarray(betas, np.float64)
    return Schedule(jnp.asarray(betas, jnp.float32), jnp.asarray(np.cumprod(1.0 - betas), jnp.float32))


def linear_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's linear betas; `beta_start` and `beta_end` are quoted for 1,000 steps and scaled by 1000/T."""
    _check_steps(num_steps)
    if not 0.0 < beta_start < beta_end:
        raise ValueError(f"need 0 < beta_start < beta_end, got beta_start={beta_start}, beta_end={beta_end}")
    scale = 1000.0 / num_steps
    if beta_end * scale >= 1.0:
        raise ValueError(
            f"beta_end={beta_end} scaled to {num_steps} steps is {beta_end * scale:.3f} >= 1; "
            f"use more steps (num_steps > {math.ceil(1000 * beta_end)}) or a smaller beta_end"
        )
    return _from_betas(np.linspace(beta_start * scale, beta_end * scale, num_steps))


def cosine_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's cosine schedule: abar(t) = cos^2((t/T + s) / (1 + s) * pi / 2), normalized."""
    _check_steps(num_steps)
    grid = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((grid + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
    return _from_betas(betas)


def make_schedule(kind: str, num_steps: int) -> Schedule:
    if kind == "linear":
        return linear_schedule(num_steps)
    if kind == "cosine":
        return cosine_schedule(num_steps)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")


def _bcast(values: jax.Array, like: jax.Array) -> jax.Array:
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t given x_0 at per-example steps `t` ([batch] ints in [0, T))."""
    ab = _bcast(schedule.alpha_bars[t], x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def _check_parameterization(parameterization: str) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")


def diffusion_loss(
    denoise: Denoiser,
    schedule: Schedule,
    x0: jax.Array,
    rng: jax.Array,
    *,
    mask: jax.Array | None = None,
    parameterization: str = "eps",
    loss: str = "l2",
    max_step: int | None = None,
) -> jax.Array:
    """The DDPM objective at one uniformly drawn step per example.

    `x0` is `[batch, ...]`; `mask` (broadcastable to `x0`) marks valid entries, and the loss is the mean
    over them. `max_step` (exclusive) restricts training to the first steps of the chain (DiffSpeech trains
    its shallow model only up to its boundary step).
    """
    _check_parameterization(parameterization)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    top = schedule.num_steps if max_step is None else max_step
    if not 1 <= top <= schedule.num_steps:
        raise ValueError(f"max_step must be in [1, {schedule.num_steps}], got {max_step}")
    t_key, n_key = jax.random.split(rng)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, top)
    noise = prng.normal(n_key, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    target = noise if parameterization == "eps" else x0
    err = denoise(x_t, t) - target
    err = jnp.abs(err) if loss == "l1" else jnp.square(err)
    if mask is None:
        return jnp.mean(err)
    weights = jnp.broadcast_to(mask, err.shape).astype(err.dtype)
    return jnp.sum(err * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def sample_timesteps(num_train_steps: int, num_sample_steps: int, start_step: int | None = None) -> np.ndarray:
    """The descending step indices a `num_sample_steps` DDIM chain visits, starting at `start_step`.

    Evenly spaced over [0, start_step] (start_step defaults to T - 1) and always including both ends, so
    one step jumps straight from `start_step` to the clean estimate.
    """
    _check_steps(num_train_steps)
    start = num_train_steps - 1 if start_step is None else start_step
    if not 0 <= start < num_train_steps:
        raise ValueError(f"start_step must be in [0, {num_train_steps}), got {start_step}")
    if not isinstance(num_sample_steps, int | np.integer) or not 1 <= num_sample_steps <= start + 1:
        raise ValueError(
            f"num_sample_steps must be an integer in [1, {start + 1}] (the steps from start_step={start} "
            f"down to 0), got {num_sample_steps!r}"
        )
    return np.round(np.linspace(start, 0, num_sample_steps)).astype(np.int32)


class DDIMPlan(NamedTuple):
    """The visited steps of a DDIM chain as arrays, so one compiled sampler serves every step count.

    `visited[i]` is the i-th step index the chain evaluates the network at and `nexts[i]` the step it
    moves to (-1: the clean end); entries at and after `count` are padding the loop never reads.
    """

    visited: jax.Array  # [length] int32
    nexts: jax.Array  # [length] int32
    count: jax.Array  # [] int32


def ddim_plan(
    num_train_steps: int, num_sample_steps: int, start_step: int | None = None, *, length: int | None = None
) -> DDIMPlan:
    """`sample_timesteps` as a `DDIMPlan` padded to `length` entries (default: no padding).

    Pass plans of one `length` (e.g. T) as traced arguments to a jitted `ddim_run` and it compiles
    once for all step counts and start steps.
    """
    steps = sample_timesteps(num_train_steps, num_sample_steps, start_step)
    length = len(steps) if length is None else length
    if not isinstance(length, int | np.integer) or length < len(steps):
        raise ValueError(f"length must be an integer >= num_sample_steps={len(steps)}, got {length!r}")
    visited = np.zeros(length, np.int32)
    nexts = np.full(length, -1, np.int32)
    visited[: len(steps)] = steps
    nexts[: len(steps) - 1] = steps[1:]
    return DDIMPlan(jnp.asarray(visited), jnp.asarray(nexts), jnp.asarray(len(steps), jnp.int32))


def ddim_sample(
    denoise: Denoiser,
    schedule: Schedule,
    x_start: jax.Array,
    num_sample_steps: int,
    *,
    start_step: int | None = None,
    parameterization: str = "eps",
    eta: float = 0.0,
    rng: jax.Array | None = None,
    mask: jax.Array | None = None,
    clip: float | None = None,
) -> jax.Array:
    """Runs DDIM from `x_start` (noise, or a noised base output for shallow diffusion) down to x_0.

    The step count is static here (one program per count); `ddim_run` with a `ddim_plan` takes it as
    data instead. See `ddim_run` for the update.
    """
    plan = ddim_plan(schedule.num_steps, num_sample_steps, start_step)
    return ddim_run(
        denoise, schedule, x_start, plan, parameterization=parameterization, eta=eta, rng=rng, mask=mask, clip=clip
    )


def ddim_run(
    denoise: Denoiser,
    schedule: Schedule,
    x_start: jax.Array,
    plan: DDIMPlan,
    *,
    parameterization: str = "eps",
    eta: float = 0.0,
    rng: jax.Array | None = None,
    mask: jax.Array | None = None,
    clip: float | None = None,
) -> jax.Array:
    """DDIM (Song et al. 2021, arXiv 2010.02502) over the steps of `plan`, one `lax.fori_loop`.

    Each step predicts x_0 and eps from the network output, then moves to the next visited step s:
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s); after the last visited step
    the result is x0_hat itself. `mask` zeroes padded entries after every step; `clip` bounds x0_hat.
    The loop runs `plan.count` times, which may be traced: under `jit` the plan's arrays are data.
    """
    _check_parameterization(parameterization)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta > 0 and rng is None:
        raise ValueError("eta > 0 draws fresh noise at every step: pass rng")
    if plan.visited.shape != plan.nexts.shape or plan.visited.ndim != 1:
        raise ValueError(
            f"plan.visited and plan.nexts must be 1-D of one length, got {plan.visited.shape} and {plan.nexts.shape}"
        )
    ab_all = jnp.concatenate([schedule.alpha_bars, jnp.ones((1,), schedule.alpha_bars.dtype)])
    key = rng if rng is not None else jax.random.key(0)
    batch = x_start.shape[0]

    def step(i, x):
        t, s = plan.visited[i], plan.nexts[i]
        ab_t = ab_all[t]
        ab_s = ab_all[s]  # index -1 is the appended 1.0: the clean end of the chain
        out = denoise(x, jnp.full((batch,), t, jnp.int32))
        if parameterization == "eps":
            eps = out
            x0 = (x - jnp.sqrt(1.0 - ab_t) * eps) / jnp.sqrt(ab_t)
        else:
            x0 = out
            eps = (x - jnp.sqrt(ab_t) * x0) / jnp.sqrt(jnp.maximum(1.0 - ab_t, 1e-12))
        if clip is not None:
            x0 = jnp.clip(x0, -clip, clip)
        sigma = eta * jnp.sqrt((1.0 - ab_s) / (1.0 - ab_t)) * jnp.sqrt(jnp.maximum(1.0 - ab_t / ab_s, 0.0))
        direction = jnp.sqrt(jnp.maximum(1.0 - ab_s - sigma**2, 0.0))
        noise = prng.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        x_next = jnp.sqrt(ab_s) * x0 + direction * eps + sigma * noise
        if mask is not None:
            x_next = x_next * mask
        return x_next.astype(x.dtype)

    return jax.lax.fori_loop(0, plan.count, step, x_start)
