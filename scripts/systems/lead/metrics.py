"""Exact dense retrieval and its ranking metrics (MRR@k, nDCG@k, Recall@k) for held-out queries.

Search is exact: every query is scored against the whole corpus by a jitted matmul, in batches of
queries so the (batch, corpus) score block stays small, and only each query's top `depth` passages
are kept. Each query has one or more relevant passages (binary relevance), as in MS MARCO's qrels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("depth",))
def _top(queries, corpus, depth):
    return jax.lax.top_k(queries @ corpus.T, depth)[1]


def search(queries, corpus, *, depth: int = 100, batch_size: int = 256) -> np.ndarray:
    """(num_queries, depth) corpus indices, best first, by dot product; ties go to the lower index."""
    queries, corpus = np.asarray(queries, np.float32), np.asarray(corpus, np.float32)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"queries {queries.shape} and corpus {corpus.shape} must be (n, d) and (m, d)")
    if len(corpus) == 0:
        raise ValueError("the corpus is empty: give at least one passage")
    if depth < 1 or batch_size < 1:
        raise ValueError(f"depth={depth} and batch_size={batch_size} must be >= 1")
    depth = min(depth, len(corpus))
    out = [
        np.asarray(_top(jnp.asarray(queries[i : i + batch_size]), jnp.asarray(corpus), depth))
        for i in range(0, len(queries), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, depth), np.int64)


def ranking_metrics(
    ranked: np.ndarray, relevant: list, *, mrr_at: int = 10, ndcg_at: int = 10, recall_at=(50, 100)
) -> dict:
    """Means over queries of MRR@mrr_at, nDCG@ndcg_at (binary gains, log2 discount) and Recall@k.

    `relevant[i]` is the collection of query i's relevant corpus indices; a query without any is an
    error (it has no relevance judgements, so no metric is defined for it).
    """
    ranked = np.asarray(ranked)
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists but {len(relevant)} relevance sets")
    empty = [i for i, r in enumerate(relevant) if len(r) == 0]
    if empty:
        raise ValueError(f"queries {empty[:5]} have no relevant passage (no relevance judgements); drop them")
    mrr, ndcg, recall = [], [], {k: [] for k in recall_at}
    for row, rel in zip(ranked, relevant):
        rel = set(int(x) for x in rel)
        hits = np.array([int(x) in rel for x in row])
        first = np.flatnonzero(hits[:mrr_at])
        mrr.append(1.0 / (first[0] + 1) if len(first) else 0.0)
        gains = hits[:ndcg_at] / np.log2(np.arange(2, min(ndcg_at, len(hits)) + 2))
        ideal = np.sum(1.0 / np.log2(np.arange(2, min(ndcg_at, len(rel)) + 2)))
        ndcg.append(float(np.sum(gains)) / ideal)
        for k in recall_at:
            recall[k].append(np.sum(hits[:k]) / len(rel))
    out = {f"mrr@{mrr_at}": float(np.mean(mrr)), f"ndcg@{ndcg_at}": float(np.mean(ndcg))}
    out.update({f"recall@{k}": float(np.mean(v)) for k, v in recall.items()})
    return out
