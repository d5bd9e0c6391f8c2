"""Exact search against a NumPy argsort; metrics on hand-computed cases; clear errors."""

import numpy as np
import pytest

from frugal.scripts.systems.lead.metrics import ranking_metrics, search


def test_search_matches_a_full_sort_in_batches():
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(37, 16)), rng.normal(size=(500, 16))
    got = search(queries, corpus, depth=20, batch_size=8)
    scores = queries.astype(np.float32) @ corpus.astype(np.float32).T
    for row, s in zip(got, scores):
        np.testing.assert_allclose(s[row], np.sort(s)[::-1][:20], rtol=1e-5)
    assert search(queries[:2], corpus[:5], depth=20).shape == (2, 5)  # depth capped at the corpus size


def test_metrics_on_hand_computed_cases():
    ranked = np.array([[7, 3, 5, 1], [0, 1, 2, 3], [9, 8, 6, 4]])
    relevant = [{5}, {0, 2}, {11}]
    got = ranking_metrics(ranked, relevant, mrr_at=3, ndcg_at=3, recall_at=(2, 4))
    assert got["mrr@3"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    ndcg_two = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert got["ndcg@3"] == pytest.approx((1 / np.log2(4) + ndcg_two + 0) / 3)
    assert got["recall@2"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert got["recall@4"] == pytest.approx((1 + 1 + 0) / 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: search(np.zeros((2, 4)), np.zeros((0, 4))), "corpus is empty"),
        (lambda: search(np.zeros((2, 4)), np.zeros((3, 5))), "must be"),
        (lambda: ranking_metrics(np.zeros((2, 3), int), [{1}, set()]), "no relevant passage"),
        (lambda: ranking_metrics(np.zeros((2, 3), int), [{1}]), "relevance sets"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
