"""One retrieval task: a corpus of passages, training queries with their positive passage, and
held-out queries with their relevance judgements (qrels).

Every source (the built-in documentation set, a user's MS MARCO or BEIR files, the reverse
dictionary) produces this one shape, so teacher caching, hard-negative mining, distillation and
evaluation never look at where the text came from. `validate()` is where bad input is refused: an
empty corpus, a query without a relevant passage, an index outside the corpus.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    """Text and judgements; passages are referred to by their index in `passages`."""

    name: str
    passages: tuple[str, ...]
    passage_ids: tuple[str, ...]
    train_queries: tuple[str, ...]  # may be empty (evaluation-only sets)
    train_positives: tuple[int, ...]  # one relevant passage per training query
    test_queries: tuple[str, ...]
    test_query_ids: tuple[str, ...]
    test_relevant: tuple[tuple[int, ...], ...]  # relevant passages of each held-out query
    meta: dict = dataclasses.field(default_factory=dict, compare=False)

    def validate(self) -> RetrievalSet:
        """Raises ValueError naming what is wrong; returns self."""
        n = len(self.passages)
        if n == 0:
            raise ValueError(f"retrieval set {self.name!r}: the corpus is empty; give at least one passage")
        if len(self.passage_ids) != n or len(set(self.passage_ids)) != n:
            raise ValueError(f"retrieval set {self.name!r}: passage_ids must be {n} distinct ids, one per passage")
        if len(self.train_queries) != len(self.train_positives):
            raise ValueError(
                f"retrieval set {self.name!r}: {len(self.train_queries)} training queries but "
                f"{len(self.train_positives)} positives"
            )
        bad = [p for p in self.train_positives if not 0 <= p < n]
        if bad:
            raise ValueError(f"retrieval set {self.name!r}: training positives {bad[:3]} are outside the {n} passages")
        if not self.test_queries:
            raise ValueError(f"retrieval set {self.name!r}: no held-out queries to evaluate on")
        if not len(self.test_queries) == len(self.test_query_ids) == len(self.test_relevant):
            raise ValueError(f"retrieval set {self.name!r}: test queries, ids and relevance lists differ in length")
        for qid, relevant in zip(self.test_query_ids, self.test_relevant):
            if not relevant:
                raise ValueError(
                    f"retrieval set {self.name!r}: query id {qid!r} has no relevance judgements (no relevant "
                    "passage); drop it or add its qrels"
                )
            if any(not 0 <= p < n for p in relevant):
                raise ValueError(f"retrieval set {self.name!r}: query id {qid!r} names a passage outside the corpus")
        return self

    def describe(self) -> dict:
        words = lambda texts: float(np.mean([len(t.split()) for t in texts])) if texts else 0.0
        return {
            "name": self.name,
            "passages": len(self.passages),
            "train_queries": len(self.train_queries),
            "test_queries": len(self.test_queries),
            "mean_passage_words": words(self.passages),
            "mean_query_words": words(self.train_queries + self.test_queries),
            **self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Writes the set as one JSON file (atomically: a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RetrievalSet:
        raw = json.loads(Path(path).read_text())
        for name in ("passages", "passage_ids", "train_queries", "train_positives", "test_queries", "test_query_ids"):
            raw[name] = tuple(raw[name])
        raw["test_relevant"] = tuple(tuple(r) for r in raw["test_relevant"])
        return cls(**raw).validate()

    def subset(self, *, max_train: int | None = None, max_test: int | None = None, seed: int = 0) -> RetrievalSet:
        """A smaller set for quick runs: a seeded sample of queries; the corpus is kept whole."""
        rng = np.random.default_rng(seed)

        def pick(count, limit):
            if limit is None or limit >= count:
                return np.arange(count)
            return np.sort(rng.choice(count, limit, replace=False))

        tr, te = pick(len(self.train_queries), max_train), pick(len(self.test_queries), max_test)
        return dataclasses.replace(
            self,
            train_queries=tuple(self.train_queries[i] for i in tr),
            train_positives=tuple(self.train_positives[i] for i in tr),
            test_queries=tuple(self.test_queries[i] for i in te),
            test_query_ids=tuple(self.test_query_ids[i] for i in te),
            test_relevant=tuple(self.test_relevant[i] for i in te),
        )
