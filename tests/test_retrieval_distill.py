"""Retrieval distillation losses (LEAD, arXiv 2212.05225) against NumPy loops written from the
reference code's definitions (github.com/microsoft/SimXNS/tree/main/LEAD, util.py), plus the layer
sampler's properties and the argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.transforms.retrieval_distill import (
    candidate_scores,
    contrastive_nll,
    embedding_mse,
    lead_loss,
    sample_layer_pairs,
    score_kl,
)


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def np_nll(scores, group):
    return np.mean([-np_log_softmax(row)[i * group] for i, row in enumerate(scores)])


def np_kl(student, teacher, temperature):
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        log_p = np_log_softmax(np.asarray(t_row) / temperature)
        log_q = np_log_softmax(s_row)
        total += sum(np.exp(a) * (a - b) for a, b in zip(log_p, log_q))
    return total / len(student)


def scores(rng, layers, q=4, group=3):
    return rng.normal(size=(layers, q, q * group)).astype(np.float32) * 3


def test_candidate_scores_are_dot_products_per_layer():
    rng = np.random.default_rng(0)
    queries, passages = rng.normal(size=(5, 3, 8)), rng.normal(size=(5, 6, 8))
    got = candidate_scores(jnp.asarray(queries), jnp.asarray(passages))
    for layer in range(5):
        for i in range(3):
            for j in range(6):
                assert got[layer, i, j] == pytest.approx(queries[layer, i] @ passages[layer, j], rel=1e-5)


def test_contrastive_nll_and_score_kl_match_loops():
    rng = np.random.default_rng(1)
    student, teacher = scores(rng, 2)
    assert float(contrastive_nll(jnp.asarray(student), 3)) == pytest.approx(np_nll(student, 3), rel=1e-5)
    for temperature in (1.0, 2.5):
        got = float(score_kl(jnp.asarray(student), jnp.asarray(teacher), temperature))
        assert got == pytest.approx(np_kl(student, teacher, temperature), rel=1e-5)
    assert float(score_kl(jnp.asarray(teacher), jnp.asarray(teacher))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("reweight", [True, False])
def test_lead_loss_matches_a_loop_over_pairs(reweight):
    rng = np.random.default_rng(2)
    student, teacher = scores(rng, 3), scores(rng, 6)
    s_idx, t_idx = np.array([0, 2]), np.array([1, 5])
    loss, aux = lead_loss(
        jnp.asarray(student), jnp.asarray(teacher), s_idx, t_idx, 3, reweight=reweight, pair_weight=0.5
    )
    kls = [np_kl(student[a], teacher[b], 1.0) for a, b in zip(s_idx, t_idx)]
    if reweight:
        logits = np.array([-np_nll(teacher[b], 3) / 10.0 for b in t_idx])
        weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    else:
        weights = np.array([0.5, 0.5])
    np.testing.assert_allclose(aux["pair_kl"], kls, rtol=1e-5)
    np.testing.assert_allclose(aux["weights"], weights, rtol=1e-5)
    assert float(loss) == pytest.approx(float(np.dot(weights, kls)), rel=1e-5)


def test_reweighting_weights_carry_no_gradient():
    """The teacher-quality weights are constants for the gradient: d loss / d teacher scores equals
    the gradient of the weighted KLs with the weights frozen at their values."""
    rng = np.random.default_rng(3)
    student, teacher = jnp.asarray(scores(rng, 2)), jnp.asarray(scores(rng, 2))
    idx = jnp.array([0, 1])
    _, aux = lead_loss(student, teacher, idx, idx, 3)
    grad = jax.grad(lambda t: lead_loss(student, t, idx, idx, 3)[0])(teacher)
    frozen = jax.grad(lambda t: sum(aux["weights"][k] * score_kl(student[k], t[k]) for k in range(2)))(teacher)
    np.testing.assert_allclose(grad, frozen, rtol=1e-5, atol=1e-7)


def test_better_teacher_layers_weigh_more():
    """A teacher layer that puts its mass on the positives gets the larger weight."""
    rng = np.random.default_rng(4)
    teacher = scores(rng, 2)
    teacher[1] = -5.0
    teacher[1][np.arange(4), np.arange(4) * 3] = 5.0  # layer 1 ranks every positive first
    _, aux = lead_loss(jnp.asarray(scores(rng, 2)), jnp.asarray(teacher), jnp.array([0, 1]), jnp.array([0, 1]), 3)
    assert aux["weights"][1] > aux["weights"][0]


def test_layer_pairs_are_sorted_distinct_and_resampled_every_n_steps():
    key = jax.random.key(0)
    kw = dict(student_layers=3, teacher_layers=6, num_pairs=3, resample_every=10)
    draws = [sample_layer_pairs(key, step, **kw) for step in range(0, 200)]
    seen_teacher = set()
    for step, (s, t) in enumerate(draws):
        s, t = np.asarray(s), np.asarray(t)
        assert list(s) == [0, 1, 2]  # K = student depth: every student layer
        assert list(t) == sorted(set(t.tolist())) and len(t) == 3 and t.min() >= 0 and t.max() <= 5
        np.testing.assert_array_equal(t, draws[step - step % 10][1])  # fixed inside a 10-step round
        seen_teacher.add(tuple(t.tolist()))
    assert len(seen_teacher) > 5  # rounds draw different layer sets
    jitted = jax.jit(lambda step: sample_layer_pairs(key, step, **kw))
    np.testing.assert_array_equal(jitted(37)[1], draws[37][1])
    last = sample_layer_pairs(key, 0, student_layers=3, teacher_layers=6, num_pairs=2, mode="last")
    assert [list(map(int, x)) for x in last] == [[1, 2], [4, 5]]


def test_every_teacher_layer_is_drawn_about_equally_often():
    key = jax.random.key(1)
    counts = np.zeros(6)
    for round_ in range(600):
        _, t = sample_layer_pairs(key, round_ * 10, student_layers=3, teacher_layers=6, num_pairs=2)
        counts[np.asarray(t)] += 1
    np.testing.assert_allclose(counts / 600, 2 / 6, atol=0.06)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: contrastive_nll(jnp.zeros((4, 10)), 3), "must be 12 candidates"),
        (lambda: contrastive_nll(jnp.zeros((4, 12)), 0), "group_size=0"),
        (lambda: score_kl(jnp.zeros((2, 4)), jnp.zeros((2, 5))), "must match"),
        (lambda: score_kl(jnp.zeros((2, 4)), jnp.zeros((2, 4)), 0.0), "temperature=0.0"),
        (lambda: sample_layer_pairs(jax.random.key(0), 0, student_layers=3, teacher_layers=6, num_pairs=4), "depth"),
        (
            lambda: sample_layer_pairs(jax.random.key(0), 0, student_layers=3, teacher_layers=6, num_pairs=2, mode="x"),
            "mode",
        ),
        (lambda: lead_loss(jnp.zeros((2, 2, 6)), jnp.zeros((2, 2, 4)), jnp.array([0]), jnp.array([0]), 3), "same"),
        (lambda: embedding_mse(jnp.zeros((2, 8)), jnp.zeros((2, 4))), "one width"),
        (lambda: candidate_scores(jnp.zeros((2, 8)), jnp.zeros((4, 4))), "embedding width"),
    ],
)
def test_bad_arguments_say_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_embedding_mse():
    a, b = jnp.ones((2, 3)), jnp.zeros((2, 3))
    assert float(embedding_mse(a, b)) == 1.0
