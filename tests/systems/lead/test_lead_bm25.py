"""BM25 as a sparse product gives rank_bm25's scores exactly; negatives are merged from two rankings
without repeats or the positive; a retrieval set refuses an empty corpus and unjudged queries."""

import numpy as np
import pytest

from frugal.scripts.systems.lead.bm25 import BM25, words
from frugal.scripts.systems.lead.experiment import merge_rankings
from frugal.scripts.systems.lead.retrieval_set import RetrievalSet

CORPUS = [
    "Compute the inverse of a matrix.",
    "Return the sum of array elements over a given axis.",
    "the the the of of a a",  # a very common word gets a negative idf, replaced by epsilon * mean idf
    "Read a JSON document from a file and return the object.",
    "Solve a linear system of equations for the unknown vector; the matrix must be square.",
    "",
]


def test_scores_equal_rank_bm25():
    from rank_bm25 import BM25Okapi

    ref = BM25Okapi([words(t) for t in CORPUS])
    ours = BM25(CORPUS)
    queries = ["inverse of a matrix", "sum sum axis", "json file", "nothing matches here", "the matrix the"]
    expected = np.stack([ref.get_scores(words(q)) for q in queries])
    np.testing.assert_allclose(ours.scores(queries), expected, rtol=1e-12, atol=1e-12)
    top = ours.top(queries, 2)
    np.testing.assert_array_equal(top, np.argsort(-expected, axis=1, kind="stable")[:, :2])
    assert top[0, 0] == 0 and top[2, 0] == 3


def test_bm25_bad_input():
    with pytest.raises(ValueError, match="corpus is empty"):
        BM25([])
    with pytest.raises(ValueError, match="b=2"):
        BM25(CORPUS, b=2)


def test_merge_rankings_alternates_and_skips_positive_and_repeats():
    a = np.array([[5, 1, 2, 3], [0, 1, 2, 3]])
    b = np.array([[1, 4, 6, 7], [3, 2, 9, 8]])
    out = merge_rankings([a, b], np.array([1, 2]), 4)
    np.testing.assert_array_equal(out, [[5, 4, 2, 6], [0, 3, 1, 9]])
    with pytest.raises(ValueError, match="negative_depth=9"):
        merge_rankings([a, b], np.array([1, 2]), 9)


def _set(**changes):
    base = dict(
        name="t",
        passages=("p0", "p1", "p2"),
        passage_ids=("a", "b", "c"),
        train_queries=("q0",),
        train_positives=(1,),
        test_queries=("q1", "q2"),
        test_query_ids=("x", "y"),
        test_relevant=((0,), (2, 1)),
    )
    base.update(changes)
    return RetrievalSet(**base)


def test_retrieval_set_round_trip_subset_and_errors(tmp_path):
    rs = _set().validate()
    assert RetrievalSet.load(rs.save(tmp_path / "s.json")) == rs
    small = rs.subset(max_test=1, seed=3)
    assert len(small.test_queries) == 1 and small.passages == rs.passages
    assert small.test_relevant[0] == rs.test_relevant[rs.test_queries.index(small.test_queries[0])]
    with pytest.raises(ValueError, match="corpus is empty"):
        _set(passages=(), passage_ids=()).validate()
    with pytest.raises(ValueError, match="query id 'y' has no relevance judgements"):
        _set(test_relevant=((0,), ())).validate()
    with pytest.raises(ValueError, match="outside the corpus"):
        _set(test_relevant=((0,), (7,))).validate()
    with pytest.raises(ValueError, match="outside the 3 passages"):
        _set(train_positives=(3,)).validate()
    with pytest.raises(ValueError, match="distinct ids"):
        _set(passage_ids=("a", "a", "c")).validate()
