"""Okapi BM25 as one sparse matrix product: the lexical baseline row and a source of hard negatives.

Scores are those of `rank_bm25.BM25Okapi` (github.com/dorianbrown/rank_bm25, its defaults k1 = 1.5,
b = 0.75, epsilon = 0.25: idf = ln((N - n + 0.5) / (n + 0.5)), a negative idf replaced by epsilon times
the mean idf, a query term counted once per occurrence), but every query is scored against the whole
corpus at once: the per-(passage, term) weights are precomputed in a CSR matrix, so a batch of queries
is one sparse product instead of a Python loop over passages per query term.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

_TOKEN = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (the tokenizer of both BM25 and the test's rank_bm25 reference)."""
    return _TOKEN.findall(text.lower())


class BM25:
    """BM25Okapi over a fixed corpus; `scores(queries)` -> (len(queries), len(corpus))."""

    def __init__(self, corpus: list[str], *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        if len(corpus) == 0:
            raise ValueError("corpus is empty: BM25 needs at least one passage")
        if not k1 >= 0 or not 0 <= b <= 1:
            raise ValueError(f"k1={k1} must be >= 0 and b={b} in [0, 1]")
        self.vocabulary: dict[str, int] = {}
        rows, cols = [], []
        for d, text in enumerate(corpus):
            for w in words(text):
                rows.append(d)
                cols.append(self.vocabulary.setdefault(w, len(self.vocabulary)))
        n, v = len(corpus), max(len(self.vocabulary), 1)
        tf = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, v))
        tf.sum_duplicates()
        doc_len = np.asarray(tf.sum(axis=1)).ravel()
        avgdl = doc_len.mean() if doc_len.mean() > 0 else 1.0
        df = np.bincount(tf.indices, minlength=v)
        idf = np.log(n - df + 0.5) - np.log(df + 0.5)
        idf[idf < 0] = epsilon * idf.mean()
        norm = k1 * (1 - b + b * doc_len / avgdl)
        tf = tf.tocoo()
        weights = idf[tf.col] * tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.weights = sp.csr_matrix((weights, (tf.row, tf.col)), shape=(n, v)).T.tocsr()  # (terms, passages)
        self.size = n

    def scores(self, queries: list[str]) -> np.ndarray:
        rows, cols = [], []
        for i, q in enumerate(queries):
            for w in words(q):
                if w in self.vocabulary:
                    rows.append(i)
                    cols.append(self.vocabulary[w])
        counts = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(queries), self.weights.shape[0])
        )  # duplicates add up: a repeated query term counts twice, as in rank_bm25
        return np.asarray((counts @ self.weights).todense())

    def top(self, queries: list[str], depth: int, *, batch_size: int = 512, allowed=None) -> np.ndarray:
        """(len(queries), depth) passage indices, best first (ties to the lower index); with `allowed`
        (a boolean mask over the corpus) only those passages are ranked."""
        depth = min(depth, self.size if allowed is None else int(np.sum(allowed)))
        out = []
        for start in range(0, len(queries), batch_size):
            s = self.scores(queries[start : start + batch_size])
            if allowed is not None:
                s = np.where(np.asarray(allowed)[None], s, -np.inf)
            out.append(np.argsort(-s, axis=1, kind="stable")[:, :depth])
        return np.concatenate(out) if out else np.zeros((0, depth), np.int64)
