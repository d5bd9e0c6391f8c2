"""Distillation batches and losses: a batch is a function of (seed, step) with the positive first and
mined negatives after it, the teacher's scores are scale x cosine of its cached embeddings, each
method's loss is the sum of its terms (checked against NumPy), and LEAD's layer draw holds for
`resample_every` steps and differs between seeds."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from frugal.scripts.systems.lead.training import (
    DistillData,
    LossSettings,
    batch_fn,
    method_loss,
)

N_Q, N_P, LQ, LP, LT, D = 12, 30, 6, 8, 4, 5


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    mask = lambda n, L: (np.arange(L)[None] < rng.integers(2, L + 1, (n, 1))).astype(np.int32)
    positives = rng.permutation(N_P)[:N_Q]
    negatives = np.stack([rng.permutation([p for p in range(N_P) if p != pos])[:6] for pos in positives])
    return DistillData(
        rng.integers(1, 50, (N_Q, LQ)).astype(np.int32),
        mask(N_Q, LQ),
        rng.integers(1, 50, (N_P, LP)).astype(np.int32),
        mask(N_P, LP),
        positives,
        negatives,
        _unit(rng.normal(size=(LT, N_Q, D))),
        _unit(rng.normal(size=(LT, N_P, D))),
    )


def test_batches_are_reproducible_and_well_formed(data):
    batch_at, group = batch_fn(data, batch_queries=4, hard_negatives=2, scale=20.0, seed=1, method="mse")
    a, b = batch_at(7, slice(None)), batch_at(7, slice(None))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["p_ids"], batch_at(8, slice(None))["p_ids"])
    assert group == 3 and a["p_ids"].shape == (4, 3, LP) and a["teacher_scores"].shape == (4, LT, 12)
    # recover which queries and passages were drawn from the token rows, then check against the data
    q_rows = [int(np.flatnonzero((data.q_ids == r).all(1))[0]) for r in a["q_ids"]]
    p_rows = np.array([[int(np.flatnonzero((data.p_ids == r).all(1))[0]) for r in g] for g in a["p_ids"]])
    for i, q in enumerate(q_rows):
        assert p_rows[i, 0] == data.positives[q]
        assert set(p_rows[i, 1:]) <= set(data.negatives[q])
    expected = 20.0 * np.einsum("lqd,lpd->qlp", data.teacher_q[:, q_rows], data.teacher_p[:, p_rows.reshape(-1)])
    np.testing.assert_allclose(a["teacher_scores"], expected, rtol=1e-5)
    np.testing.assert_allclose(a["teacher_final"][:, 0], data.teacher_q[-1, q_rows])
    half = batch_at(7, slice(0, 2))
    assert np.array_equal(half["q_ids"], a["q_ids"][:2])
    with pytest.raises(ValueError, match="hard_negatives=7 exceeds the 6 mined"):
        batch_fn(data, batch_queries=4, hard_negatives=7, scale=20.0, seed=1, method="none")
    with pytest.raises(ValueError, match="batch_queries=13 exceeds the 12"):
        batch_fn(data, batch_queries=13, hard_negatives=2, scale=20.0, seed=1, method="none")


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _kl(student, teacher):
    p = np.exp(_log_softmax(teacher))
    return float(np.sum(p * (_log_softmax(teacher) - _log_softmax(student))) / len(student))


def test_each_method_is_the_sum_of_its_terms(data):
    batch_at, group = batch_fn(data, batch_queries=4, hard_negatives=2, scale=20.0, seed=0, method="mse")
    batch = {k: jnp.asarray(v) for k, v in batch_at(3, slice(None)).items()}
    rng = np.random.default_rng(2)
    q, p = _unit(rng.normal(size=(3, 4, D))), _unit(rng.normal(size=(3, 12, D)))  # student layers' embeddings
    scores = 20.0 * np.einsum("lqd,lpd->lqp", q, p)
    nll = -np.mean(_log_softmax(scores[-1])[np.arange(4), np.arange(4) * group])
    teacher = np.transpose(np.asarray(batch["teacher_scores"]), (1, 0, 2))
    results = {}
    for method in ("none", "response", "lead", "lead_flat", "lead_last", "mse"):
        settings = LossSettings(method, student_layers=3, teacher_layers=LT, num_pairs=2)
        loss, metrics = method_loss(settings, jnp.asarray(scores), batch, group, (q[-1], p[-1]))
        results[method] = (float(loss), {k: float(v) for k, v in metrics.items()})
        assert metrics["nll"] == pytest.approx(nll, rel=1e-4)
    assert results["none"][0] == pytest.approx(nll, rel=1e-4)
    kd = _kl(scores[-1], teacher[-1])
    assert results["response"][0] == pytest.approx(nll + kd, rel=1e-4)
    # lead_last pairs student layers 1, 2 with teacher layers 2, 3; weights softmax(-NLL_teacher / 10)
    t_nll = np.array([-np.mean(_log_softmax(teacher[t])[np.arange(4), np.arange(4) * group]) for t in (2, 3)])
    w = np.exp(-t_nll / 10) / np.exp(-t_nll / 10).sum()
    layer_kl = w[0] * _kl(scores[1], teacher[2]) + w[1] * _kl(scores[2], teacher[3])
    assert results["lead_last"][0] == pytest.approx(nll + kd + layer_kl, rel=1e-4)
    assert results["lead_last"][1]["max_pair_weight"] == pytest.approx(w.max(), rel=1e-5)
    for method in ("lead", "lead_flat"):
        m = results[method][1]
        assert results[method][0] == pytest.approx(m["nll"] + m["kl_final"] + m["kl_layers"], rel=1e-5)
    assert results["lead_flat"][1]["max_pair_weight"] == 1.0
    student_all = np.concatenate([q[-1][:, None], p[-1].reshape(4, group, -1)], axis=1)
    mse = np.mean((student_all - np.asarray(batch["teacher_final"])) ** 2)
    assert results["mse"][0] == pytest.approx(nll + kd + mse, rel=1e-4)


def test_lead_layer_draw_holds_for_ten_steps_and_depends_on_the_seed():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.normal(size=(3, 4, 12)), jnp.float32)
    batch = {"teacher_scores": jnp.asarray(rng.normal(size=(4, LT, 12)), jnp.float32)}
    settings = LossSettings("lead", student_layers=3, teacher_layers=LT, num_pairs=1)

    def layer_kl(step, seed):
        b = dict(batch, step=jnp.full((4,), step), seed=jnp.full((4,), seed))
        return float(method_loss(settings, scores, b, 3)[1]["kl_layers"])

    assert len({layer_kl(s, 0) for s in range(10)}) == 1  # one draw for steps 0..9
    draws = {layer_kl(10 * r, 0) for r in range(12)} | {layer_kl(0, s) for s in range(12)}
    assert len(draws) > 3  # re-drawn every 10 steps and per seed (1 of 3 x 1 of 4 layers: 12 pairs)


def test_loss_settings_refuse_more_pairs_than_layers():
    with pytest.raises(ValueError, match="num_pairs=4 is larger than a model's depth"):
        LossSettings("lead", student_layers=3, teacher_layers=6, num_pairs=4)
    with pytest.raises(ValueError, match="method='kd'"):
        LossSettings("kd", student_layers=3, teacher_layers=6)
    assert dataclasses.replace(LossSettings("none", 3, 6, num_pairs=9), method="none")  # pairs unused without lead
