"""A retrieval set from the user's own files: the BEIR layout or the MS MARCO passage layout.

Nothing is downloaded; the files are read as they lie (a `.gz` suffix is read through gzip).

- BEIR (https://github.com/beir-cellar/beir, "data format" in its README): `corpus.jsonl` lines
  `{"_id": ..., "title": ..., "text": ...}` (the passage is title + " " + text when the title is not
  empty), `queries.jsonl` lines `{"_id": ..., "text": ...}`, and qrels `qrels/<split>.tsv` with the
  header `query-id<TAB>corpus-id<TAB>score`.
- MS MARCO passage ranking (https://github.com/microsoft/MSMARCO-Passage-Ranking): `collection.tsv`
  lines `pid<TAB>passage`, `queries.<split>.tsv` lines `qid<TAB>query`, and qrels in TREC form
  `qid 0 pid rel` (four whitespace-separated columns, no header).

Corpus and queries files are JSON lines when their suffix is `.jsonl` / `.json`, tab-separated when it
is `.tsv` / `.txt`, and otherwise by their first non-blank line (`{` starts JSON). A qrels file is BEIR
when its first line is the BEIR header or has three tab-separated columns, TREC when it has four
whitespace-separated columns; every later line must match. `queries` may be several files (MS MARCO
keeps training and dev queries apart); their ids must be distinct.

Semantics: the held-out queries are the query ids with at least one test qrels line of score > 0, in
the order they first appear in the test qrels file; their relevant passages are those corpus ids with
score > 0 (in file order, each once). Each training query (train qrels, optional) gives one pair: the
query and its first positive passage in file order. Training queries whose id is also a test query, or
whose text equals a test query's text (case and spacing ignored), are dropped; `meta["counts"]` says how
many. Passages are cut to `max_passage_words` whitespace-separated words.

Every line is streamed once and every look-up is a dict, so the 8.8M passages of MS MARCO take
linear time (and memory for their text). Bad input raises ValueError / FileNotFoundError naming the
argument, the file, the line number and what is allowed.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from frugal.scripts.systems.lead.retrieval_set import RetrievalSet

BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")
PathLike = str | Path


def _existing(path: PathLike, argument: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{argument}: file {str(path)!r} {what}")
    return path


def _lines(path: Path, argument: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without the line ending) for every non-blank line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{argument} file {str(path)!r} line {number}: not UTF-8 text ({e.reason})") from None
            if number == 1:
                line = line.lstrip("\ufeff")
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def _is_jsonl(path: Path, argument: str) -> bool:
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return True
    if suffix in (".tsv", ".txt"):
        return False
    for _, line in _lines(path, argument):
        return line.lstrip().startswith("{")
    return False


def _records(path: Path, argument: str, *, title: bool) -> Iterator[tuple[int, str, str]]:
    """(line number, id, text) of a corpus (`title=True`) or queries file in either layout."""
    where = f"{argument} file {str(path)!r}"
    if _is_jsonl(path, argument):
        layout = '{"_id": ..., "title": ..., "text": ...}' if title else '{"_id": ..., "text": ...}'
        for number, line in _lines(path, argument):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{where} line {number}: not valid JSON ({e.msg}); BEIR lines look like {layout}"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where} line {number}: expected a JSON object like {layout}")
            for key in ("_id", "text"):
                if key not in obj:
                    raise ValueError(f"{where} line {number}: the JSON object has no {key!r} field; expected {layout}")
            text, head = obj["text"], obj.get("title") or ""
            if not isinstance(text, str) or not isinstance(head, str):
                raise ValueError(f"{where} line {number}: 'text' and 'title' must be strings")
            ident = "" if obj["_id"] is None else str(obj["_id"]).strip()
            if title and head.strip():
                text = f"{head} {text}"
            if not ident:
                raise ValueError(f"{where} line {number}: empty '_id'")
            yield number, ident, text
    else:
        layout = "pid<TAB>passage" if title else "qid<TAB>query"
        for number, line in _lines(path, argument):
            columns = line.split("\t")
            if len(columns) != 2:
                raise ValueError(
                    f"{where} line {number}: expected 2 tab-separated columns ({layout}), found {len(columns)}"
                )
            if not columns[0].strip():
                raise ValueError(f"{where} line {number}: empty id in the first column ({layout})")
            yield number, columns[0].strip(), columns[1]


def _score(text: str, where: str, number: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where} line {number}: relevance score {text!r} is not a number") from None


def _qrels(path: Path, argument: str) -> Iterator[tuple[int, str, str, float]]:
    """(line number, query id, corpus id, score) of a BEIR or TREC qrels file."""
    where = f"{argument} file {str(path)!r}"
    layout = None
    for number, line in _lines(path, argument):
        if layout is None:
            if tuple(c.strip() for c in line.split("\t")) == BEIR_QRELS_HEADER or tuple(line.split()) == (
                BEIR_QRELS_HEADER
            ):
                layout = "beir"
                continue
            if len(line.split("\t")) == 3:
                layout = "beir"
            elif len(line.split()) == 4:
                layout = "trec"
            else:
                raise ValueError(
                    f"{where} line {number}: expected BEIR qrels (header 'query-id<TAB>corpus-id<TAB>score', then "
                    "3 tab-separated columns) or TREC qrels ('qid 0 pid rel', 4 whitespace-separated columns)"
                )
        if layout == "beir":
            columns = [c.strip() for c in line.split("\t")]
            if len(columns) != 3:
                raise ValueError(
                    f"{where} line {number}: expected 3 tab-separated columns (query-id, corpus-id, score) as in "
                    f"the lines above, found {len(columns)}"
                )
            qid, pid, score = columns
        else:
            columns = line.split()
            if len(columns) != 4:
                raise ValueError(
                    f"{where} line {number}: expected 4 whitespace-separated columns (qid 0 pid rel) as in the "
                    f"lines above, found {len(columns)}"
                )
            qid, _, pid, score = columns
        yield number, qid, pid, _score(score, where, number)


def _as_paths(queries: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(queries, (str, Path)):
        return [queries]
    paths = list(queries)
    if not paths:
        raise ValueError("queries: give at least one queries file")
    return paths


def load_user_set(
    corpus: PathLike,
    queries: PathLike | Sequence[PathLike],
    test_qrels: PathLike,
    train_qrels: PathLike | None = None,
    *,
    name: str | None = None,
    max_passage_words: int = 200,
) -> RetrievalSet:
    """The retrieval set of a user's BEIR or MS MARCO files (see the module docstring)."""
    if max_passage_words < 1:
        raise ValueError(f"max_passage_words={max_passage_words} must be >= 1")
    corpus_path = _existing(corpus, "corpus")
    query_paths = [_existing(p, "queries") for p in _as_paths(queries)]
    test_path = _existing(test_qrels, "test_qrels")
    train_path = _existing(train_qrels, "train_qrels") if train_qrels is not None else None

    passages: list[str] = []
    passage_ids: list[str] = []
    index: dict[str, int] = {}
    truncated = 0
    for number, pid, text in _records(corpus_path, "corpus", title=True):
        if pid in index:
            raise ValueError(
                f"corpus file {str(corpus_path)!r} line {number}: duplicate passage id {pid!r} (passage "
                f"{index[pid] + 1} of the file has it too); passage ids must be distinct"
            )
        words = text.split()
        truncated += len(words) > max_passage_words
        index[pid] = len(passages)
        passage_ids.append(pid)
        passages.append(" ".join(words[:max_passage_words]))
    if not passages:
        raise ValueError(f"corpus file {str(corpus_path)!r} has no passages; give at least one")

    query_text: dict[str, str] = {}
    for path in query_paths:
        for number, qid, text in _records(path, "queries", title=False):
            if qid in query_text:
                raise ValueError(f"queries file {str(path)!r} line {number}: duplicate query id {qid!r}")
            query_text[qid] = " ".join(text.split())
    query_files = ", ".join(repr(str(p)) for p in query_paths)

    def judgements(path: Path, argument: str) -> tuple[dict[str, list[int]], int]:
        """{query id: positive passage indices in file order (each once)} over every judged query, and the
        number of qrels lines."""
        judged: dict[str, list[int]] = {}
        lines = 0
        for number, qid, pid, score in _qrels(path, argument):
            lines += 1
            if qid not in query_text:
                raise ValueError(
                    f"{argument} file {str(path)!r} line {number}: query id {qid!r} is not in the queries file(s) "
                    f"{query_files}"
                )
            if pid not in index:
                raise ValueError(
                    f"{argument} file {str(path)!r} line {number}: corpus id {pid!r} is not in the corpus file "
                    f"{str(corpus_path)!r}"
                )
            positives = judged.setdefault(qid, [])
            if score > 0 and index[pid] not in positives:
                positives.append(index[pid])
        return judged, lines

    test_judged, test_lines = judgements(test_path, "test_qrels")
    if not any(test_judged.values()):
        raise ValueError(
            f"test_qrels file {str(test_path)!r} has no judgement with score > 0 ({test_lines} lines); held-out "
            "queries need at least one relevant passage"
        )
    unjudged = [qid for qid, positives in test_judged.items() if not positives]
    if unjudged:
        more = f" (and {len(unjudged) - 1} more)" if len(unjudged) > 1 else ""
        raise ValueError(
            f"test_qrels file {str(test_path)!r}: query id {unjudged[0]!r}{more} has no relevance judgements with "
            "score > 0; give it a relevant passage or remove its lines"
        )
    test_ids = list(test_judged)

    train_queries: list[str] = []
    train_positives: list[int] = []
    counts = {
        "corpus_passages": len(passages),
        "truncated_passages": truncated,
        "queries_in_files": len(query_text),
        "test_qrels_lines": test_lines,
        "test_relevant_pairs": sum(len(p) for p in test_judged.values()),
    }
    if train_path is not None:
        train_judged, train_lines = judgements(train_path, "train_qrels")
        test_texts = {query_text[q].lower() for q in test_ids}
        same_id = same_text = no_positive = 0
        for qid, positives in train_judged.items():
            if qid in test_judged:
                same_id += 1
            elif not positives:
                no_positive += 1
            elif query_text[qid].lower() in test_texts:
                same_text += 1
            else:
                train_queries.append(query_text[qid])
                train_positives.append(positives[0])
        counts.update(
            train_qrels_lines=train_lines,
            train_dropped_in_test_qrels=same_id,
            train_dropped_same_text_as_test=same_text,
            train_dropped_without_positive=no_positive,
        )

    files = {"corpus": str(corpus_path), "queries": [str(p) for p in query_paths], "test_qrels": str(test_path)}
    if train_path is not None:
        files["train_qrels"] = str(train_path)
    layout = "beir" if _is_jsonl(corpus_path, "corpus") else "msmarco"
    return RetrievalSet(
        name=name or corpus_path.parent.name or "user",
        passages=tuple(passages),
        passage_ids=tuple(passage_ids),
        train_queries=tuple(train_queries),
        train_positives=tuple(train_positives),
        test_queries=tuple(query_text[q] for q in test_ids),
        test_query_ids=tuple(test_ids),
        test_relevant=tuple(tuple(test_judged[q]) for q in test_ids),
        meta={
            "source": f"user files ({layout} layout)",
            "files": files,
            "counts": counts,
            "max_passage_words": max_passage_words,
        },
    ).validate()


def load_beir_folder(
    folder: PathLike,
    split: str = "test",
    train_split: str | None = "train",
    *,
    name: str | None = None,
    max_passage_words: int = 200,
) -> RetrievalSet:
    """A BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, and qrels/<train_split>.tsv
    for training when that file exists (`train_split=None`: no training queries)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"folder: {str(root)!r} is not a folder; give a BEIR dataset folder")
    if split == train_split:
        raise ValueError(f"split={split!r} and train_split={train_split!r} must differ")
    needed = {"corpus.jsonl": root / "corpus.jsonl", "queries.jsonl": root / "queries.jsonl"}
    needed[f"qrels/{split}.tsv"] = root / "qrels" / f"{split}.tsv"
    missing = [label for label, path in needed.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"folder {str(root)!r} has no {', '.join(missing)}; a BEIR folder holds corpus.jsonl, queries.jsonl "
            f"and qrels/<split>.tsv"
        )
    train = root / "qrels" / f"{train_split}.tsv" if train_split is not None else None
    return load_user_set(
        needed["corpus.jsonl"],
        needed["queries.jsonl"],
        needed[f"qrels/{split}.tsv"],
        train if train is not None and train.is_file() else None,
        name=name or root.name,
        max_passage_words=max_passage_words,
    )
