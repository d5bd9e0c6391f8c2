"""frugal.transforms.diffusion against closed forms: schedules, the loss with oracle denoisers, DDIM on
data whose optimal denoiser is known exactly (a point mass and a Gaussian)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.transforms import diffusion as D


def test_linear_schedule_matches_the_ddpm_formula_stretched_to_t_steps():
    s = D.linear_schedule(50)
    betas = np.linspace(1e-4 * 20, 0.02 * 20, 50)
    np.testing.assert_allclose(np.asarray(s.betas), betas, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s.alpha_bars), np.cumprod(1 - betas), rtol=1e-5)
    assert s.num_steps == 50


def test_cosine_schedule_alpha_bar_is_the_squared_cosine():
    t, s = 40, 0.008
    sched = D.cosine_schedule(t, s=s)
    f = lambda u: np.cos((u / t + s) / (1 + s) * np.pi / 2) ** 2
    want = f(np.arange(1, t + 1)) / f(0)
    np.testing.assert_allclose(np.asarray(sched.alpha_bars)[:-1], want[:-1], rtol=1e-5)
    assert np.all(np.diff(np.asarray(sched.alpha_bars)) < 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: D.linear_schedule(0), "num_steps"),
        (lambda: D.linear_schedule(10), "beta_end"),
        (lambda: D.make_schedule("sigmoid", 10), "schedule must be one of"),
        (lambda: D.sample_timesteps(10, 11), "num_sample_steps"),
        (lambda: D.sample_timesteps(10, 2, start_step=10), "start_step"),
        (lambda: D.sample_timesteps(10, 5, start_step=3), r"\[1, 4\]"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sample_timesteps_span_start_to_zero_without_repeats():
    assert D.sample_timesteps(100, 1).tolist() == [99]
    assert D.sample_timesteps(100, 4).tolist() == [99, 66, 33, 0]
    assert D.sample_timesteps(100, 3, start_step=30).tolist() == [30, 15, 0]
    for n in range(1, 101):
        steps = D.sample_timesteps(100, n)
        assert len(set(steps.tolist())) == n and steps[0] == 99 and (n == 1 or steps[-1] == 0)


def test_q_sample_is_the_closed_form():
    s = D.linear_schedule(100)
    x0, noise = jnp.ones((3, 4)), jnp.full((3, 4), 2.0)
    t = jnp.array([0, 50, 99])
    ab = np.cumprod(1 - np.linspace(1e-3, 0.2, 100))[[0, 50, 99]][:, None]
    want = np.broadcast_to(np.sqrt(ab) + 2 * np.sqrt(1 - ab), (3, 4))
    np.testing.assert_allclose(np.asarray(D.q_sample(s, x0, t, noise)), want, rtol=1e-5)


def test_oracle_denoisers_have_zero_loss_and_the_mask_averages_over_valid_entries():
    s = D.cosine_schedule(30)
    x0 = jax.random.normal(jax.random.key(0), (4, 6, 3))
    mask = (jnp.arange(6) < 4)[None, :, None]

    def eps_oracle(x, t):
        ab = s.alpha_bars[t][:, None, None]
        return (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)

    assert float(D.diffusion_loss(eps_oracle, s, x0, jax.random.key(1), mask=mask)) < 1e-8
    assert float(D.diffusion_loss(lambda x, t: x0, s, x0, jax.random.key(1), parameterization="x0")) == 0.0
    # A denoiser that predicts 0 under the x0 objective pays exactly mean(x0^2) over the valid entries.
    zero = lambda x, t: jnp.zeros_like(x)
    got = D.diffusion_loss(zero, s, x0, jax.random.key(2), mask=mask, parameterization="x0", loss="l2")
    want = np.square(np.asarray(x0))[:, :4].mean()
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    got = D.diffusion_loss(zero, s, x0, jax.random.key(2), mask=mask, parameterization="x0", loss="l1")
    np.testing.assert_allclose(float(got), np.abs(np.asarray(x0))[:, :4].mean(), rtol=1e-5)


def test_max_step_restricts_the_training_steps():
    s = D.linear_schedule(100)
    seen = []

    def spy(x, t):
        seen.append(t)
        return jnp.zeros_like(x)

    D.diffusion_loss(spy, s, jnp.zeros((512, 2)), jax.random.key(0), max_step=10)
    assert int(jnp.max(seen[0])) < 10 and int(jnp.min(seen[0])) == 0


@pytest.mark.parametrize("parameterization", ["eps", "x0"])
def test_ddim_recovers_a_point_mass_at_any_step_count_and_start(parameterization):
    s = D.linear_schedule(100)
    c = 1.7

    def oracle(x, t):
        ab = s.alpha_bars[t][:, None]
        return (x - jnp.sqrt(ab) * c) / jnp.sqrt(1 - ab) if parameterization == "eps" else jnp.full_like(x, c)

    x_t = jax.random.normal(jax.random.key(0), (5, 3))
    for steps in (1, 2, 7, 100):
        out = D.ddim_sample(oracle, s, x_t, steps, parameterization=parameterization)
        np.testing.assert_allclose(np.asarray(out), c, rtol=1e-4)
    out = D.ddim_sample(oracle, s, x_t, 3, start_step=20, parameterization=parameterization)
    np.testing.assert_allclose(np.asarray(out), c, rtol=1e-4)


def _gaussian_oracle(s, mu, sd):
    # For x0 ~ N(mu, sd^2): E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab sd^2 + 1 - ab).
    def eps(x, t):
        ab = s.alpha_bars[t][:, None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * sd**2 + 1 - ab)

    return eps


def test_ddim_with_the_exact_gaussian_denoiser_samples_the_data_distribution():
    s = D.cosine_schedule(100)
    mu, sd = 0.5, 0.3
    oracle = _gaussian_oracle(s, mu, sd)
    x_t = jax.random.normal(jax.random.key(0), (20000, 1))
    # eta = 0: each deterministic step is a linear map that shrinks the spread a little (Cauchy-Schwarz
    # on its two coefficients), so the spread grows with the step count towards sd (2% short at 100
    # steps); one step jumps to E[x0 | x_T], the mean with almost none of the spread: few-step samplers
    # smooth.
    spreads = [float(np.asarray(D.ddim_sample(oracle, s, x_t, n)).std()) for n in (1, 4, 16, 100)]
    assert spreads[0] < 0.01 * sd and spreads == sorted(spreads) and 0.97 * sd < spreads[-1] < sd
    assert abs(float(np.asarray(D.ddim_sample(oracle, s, x_t, 100)).mean()) - mu) < 0.01
    # eta = 1 (ancestral with DDPM's posterior variance, the posterior mean of x0 plugged in) leaves out
    # Var(x0 | x_t), so it is a little narrower still (Bao et al. 2022, arXiv 2201.06503).
    out = np.asarray(D.ddim_sample(oracle, s, x_t, 100, eta=1.0, rng=jax.random.key(3)))
    assert abs(out.mean() - mu) < 0.01 and 0.9 * sd < out.std() < spreads[-1]


def test_ddim_masks_padding_and_refuses_eta_without_rng():
    s = D.linear_schedule(100)
    mask = jnp.array([[1.0], [0.0]])
    out = D.ddim_sample(lambda x, t: jnp.ones_like(x), s, jnp.ones((2, 1)), 4, mask=mask)
    assert float(out[1, 0]) == 0.0
    with pytest.raises(ValueError, match="rng"):
        D.ddim_sample(lambda x, t: x, s, jnp.ones((2, 1)), 4, eta=0.5)
    with pytest.raises(ValueError, match="parameterization"):
        D.ddim_sample(lambda x, t: x, s, jnp.ones((2, 1)), 4, parameterization="v")


def test_ddim_sample_jits_with_the_step_count_static():
    s = D.linear_schedule(100)
    f = jax.jit(lambda x: D.ddim_sample(_gaussian_oracle(s, 0.0, 1.0), s, x, 4))
    x = jax.random.normal(jax.random.key(0), (3, 2))
    np.testing.assert_allclose(
        np.asarray(f(x)), np.asarray(D.ddim_sample(_gaussian_oracle(s, 0.0, 1.0), s, x, 4)), rtol=1e-5
    )


def test_ddim_run_compiles_once_for_every_step_count_and_matches_the_static_chain():
    s = D.linear_schedule(50)
    oracle = _gaussian_oracle(s, 0.3, 0.5)
    traces = []

    @jax.jit
    def run(x, plan):
        traces.append(1)
        return D.ddim_run(oracle, s, x, plan, eta=0.5, rng=jax.random.key(1))

    x = jax.random.normal(jax.random.key(0), (4, 3))
    for steps, start in ((1, None), (4, None), (50, None), (3, 20)):
        got = run(x, D.ddim_plan(50, steps, start, length=50))
        want = D.ddim_sample(oracle, s, x, steps, start_step=start, eta=0.5, rng=jax.random.key(1))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert len(traces) == 1
    plan = D.ddim_plan(50, 3, 20, length=6)
    assert plan.visited.tolist() == [20, 10, 0, 0, 0, 0] and plan.nexts.tolist() == [10, 0, -1, -1, -1, -1]
    assert int(plan.count) == 3
    with pytest.raises(ValueError, match="length must be an integer >= num_sample_steps=3"):
        D.ddim_plan(50, 3, 20, length=2)
