"""The user retrieval-set loader on tiny hand-written BEIR and MS MARCO files: exact passages, ids,
queries and relevance (written out here, not taken from the loader), title + text joining, word cuts,
train/test overlap removal, and every refusal by its message."""

import gzip
import json
from pathlib import Path

import pytest

from frugal.scripts.systems.lead.retrieval_set import RetrievalSet
from frugal.scripts.systems.lead.user_data import load_beir_folder, load_user_set

BEIR_CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr when content."},
    {"_id": "d2", "title": "", "text": "Dogs bark at strangers."},
    {"_id": "d3", "title": "Owls", "text": "Owls hunt at night."},
    {"_id": "d4", "text": "Bees make honey."},
    {"_id": 5, "title": "Numbers", "text": "An integer id."},
]
BEIR_QUERIES = [
    {"_id": "q1", "text": "why do cats purr"},
    {"_id": "q2", "text": "when do owls hunt", "metadata": {}},
    {"_id": "q3", "text": "what do bees make"},
    {"_id": "q4", "text": "do dogs bark"},
    {"_id": "q5", "text": "Why do  cats purr"},  # q1's text: kept out of training
    {"_id": "q6", "text": "never judged"},
]
HEADER = "query-id\tcorpus-id\tscore"
BEIR_TEST = [HEADER, "q2\td3\t1", "q1\td1\t2", "q1\td4\t0", "q1\t5\t1", "q1\td1\t1"]
BEIR_TRAIN = [HEADER, "q3\td4\t1", "q1\td1\t1", "q4\td1\t0", "q4\td2\t1", "q4\td3\t1", "q5\td1\t1", "q6\td2\t0"]


def write(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def beir_folder(root: Path, *, train=True) -> Path:
    folder = root / "tinybeir"
    write(folder / "corpus.jsonl", BEIR_CORPUS)
    write(folder / "queries.jsonl", BEIR_QUERIES)
    write(folder / "qrels" / "test.tsv", BEIR_TEST)
    if train:
        write(folder / "qrels" / "train.tsv", BEIR_TRAIN)
    return folder


def msmarco_files(root: Path) -> dict:
    return {
        "corpus": write(root / "collection.tsv", ["0\tThe sky is blue.", "1\tGrass is green.", "7\tSnow is cold."]),
        "queries": [
            write(root / "queries.train.tsv", ["100\twhat colour is grass", "101\tsnow colour"]),
            write(root / "queries.dev.tsv", ["200\twhat colour is the sky", "201\tis snow cold", "202\tunused"]),
        ],
        "test_qrels": write(root / "qrels.dev.tsv", ["200 0 0 1", "201\t0\t7\t1", "201\t0\t1\t0"]),
        "train_qrels": write(root / "qrels.train.tsv", ["100\t0\t1\t1", "101\t0\t7\t1"]),
    }


def test_beir_folder_exact_contents(tmp_path):
    rs = load_beir_folder(beir_folder(tmp_path))
    assert rs.name == "tinybeir"
    assert rs.passages == (
        "Cats Cats purr when content.",  # title + " " + text
        "Dogs bark at strangers.",  # empty title: text only
        "Owls Owls hunt at night.",
        "Bees make honey.",  # no title field
        "Numbers An integer id.",
    )
    assert rs.passage_ids == ("d1", "d2", "d3", "d4", "5")
    # test queries in the order they first appear in the test qrels; score 0 lines are not relevant
    assert rs.test_query_ids == ("q2", "q1")
    assert rs.test_queries == ("when do owls hunt", "why do cats purr")
    assert rs.test_relevant == ((2,), (0, 4))
    # q1 (a test query id) and q5 (q1's text) are dropped, q6 has no positive; q4's first positive is d2
    assert rs.train_queries == ("what do bees make", "do dogs bark")
    assert rs.train_positives == (3, 1)
    counts = rs.meta["counts"]
    assert counts["train_dropped_in_test_qrels"] == 1
    assert counts["train_dropped_same_text_as_test"] == 1
    assert counts["train_dropped_without_positive"] == 1
    assert counts["test_qrels_lines"] == 5 and counts["train_qrels_lines"] == 7
    assert counts["corpus_passages"] == 5 and counts["queries_in_files"] == 6
    assert rs.meta["files"]["test_qrels"].endswith("qrels/test.tsv")
    assert rs.meta["files"]["train_qrels"].endswith("qrels/train.tsv")
    assert rs.meta["source"] == "user files (beir layout)"
    assert RetrievalSet.load(rs.save(tmp_path / "set.json")) == rs  # meta is plain JSON


def test_beir_folder_without_train_split(tmp_path):
    folder = beir_folder(tmp_path, train=False)
    rs = load_beir_folder(folder, name="mine")
    assert rs.name == "mine" and rs.train_queries == () and rs.train_positives == ()
    assert "train_qrels" not in rs.meta["files"]
    assert load_beir_folder(beir_folder(tmp_path / "b"), train_split=None).train_queries == ()


def test_msmarco_files_exact_contents(tmp_path):
    files = msmarco_files(tmp_path / "msmarco")
    rs = load_user_set(**files, max_passage_words=3)
    assert rs.name == "msmarco"
    assert rs.passages == ("The sky is", "Grass is green.", "Snow is cold.")  # cut to 3 words
    assert rs.passage_ids == ("0", "1", "7")
    assert rs.test_query_ids == ("200", "201")
    assert rs.test_queries == ("what colour is the sky", "is snow cold")
    assert rs.test_relevant == ((0,), (2,))
    assert rs.train_queries == ("what colour is grass", "snow colour")
    assert rs.train_positives == (1, 2)
    assert rs.meta["counts"]["truncated_passages"] == 1
    assert rs.meta["counts"]["train_dropped_in_test_qrels"] == 0
    assert rs.meta["source"] == "user files (msmarco layout)"
    assert len(rs.meta["files"]["queries"]) == 2


def test_gzip_and_content_detection(tmp_path):
    corpus = tmp_path / "docs.data.gz"  # no known suffix: JSON lines recognised by content
    with gzip.open(corpus, "wt") as f:
        f.write("".join(json.dumps(x) + "\n" for x in BEIR_CORPUS))
    queries = write(tmp_path / "questions", ["\ufeffq1\twhy do cats purr", "", "q2\twhen do owls hunt"])
    qrels = write(tmp_path / "judged", ["q1 0 d3 1"])
    rs = load_user_set(corpus, queries, qrels)
    assert rs.passages[0] == "Cats Cats purr when content."
    assert rs.test_query_ids == ("q1",) and rs.test_relevant == ((2,),)
    assert rs.train_queries == ()


def test_missing_files(tmp_path):
    files = msmarco_files(tmp_path)
    for argument in ("corpus", "test_qrels", "train_qrels"):
        with pytest.raises(FileNotFoundError, match=rf"^{argument}: file .*nope.tsv' does not exist"):
            load_user_set(**{**files, argument: tmp_path / "nope.tsv"})
    with pytest.raises(FileNotFoundError, match=r"^queries: file .*nope.tsv' does not exist"):
        load_user_set(**{**files, "queries": [files["queries"][0], tmp_path / "nope.tsv"]})
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_beir_folder(tmp_path / "absent")
    folder = beir_folder(tmp_path)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no qrels/test.tsv; a BEIR folder holds"):
        load_beir_folder(folder)
    with pytest.raises(ValueError, match="split='train' and train_split='train' must differ"):
        load_beir_folder(folder, split="train")


def test_corpus_refusals(tmp_path):
    files = msmarco_files(tmp_path)
    write(files["corpus"], ["", "  "])
    with pytest.raises(ValueError, match=r"collection.tsv' has no passages; give at least one"):
        load_user_set(**files)
    write(files["corpus"], ["0\tThe sky is blue.", "1\tGrass\tis green."])
    with pytest.raises(ValueError, match=r"line 2: expected 2 tab-separated columns \(pid<TAB>passage\), found 3"):
        load_user_set(**files)
    write(files["corpus"], ["0\tThe sky is blue.", "1\tGrass is green.", "0\tagain"])
    with pytest.raises(ValueError, match=r"line 3: duplicate passage id '0' \(passage 1 of the file has it too\)"):
        load_user_set(**files)
    with pytest.raises(ValueError, match="max_passage_words=0 must be >= 1"):
        load_user_set(**files, max_passage_words=0)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"_id": "d9", "text": "unterminated', r"line 3: not valid JSON"),
        ('["d9", "a list"]', r"line 3: expected a JSON object"),
        ('{"title": "t", "text": "no id"}', r"line 3: the JSON object has no '_id' field"),
        ('{"_id": "d9", "title": "no text"}', r"line 3: the JSON object has no 'text' field"),
        ('{"_id": "d9", "text": 7}', r"line 3: 'text' and 'title' must be strings"),
        ('{"_id": "d1", "text": "same id"}', r"line 3: duplicate passage id 'd1'"),
    ],
)
def test_beir_corpus_line_refusals(tmp_path, line, message):
    folder = beir_folder(tmp_path)
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    write(folder / "corpus.jsonl", lines[:2] + [line] + lines[2:])
    with pytest.raises(ValueError, match=r"^corpus file .*corpus.jsonl' " + message):
        load_beir_folder(folder)


def test_queries_refusals(tmp_path):
    folder = beir_folder(tmp_path)
    write(folder / "queries.jsonl", [{"_id": "q1", "query": "wrong key"}])
    with pytest.raises(ValueError, match=r"^queries file .*line 1: the JSON object has no 'text' field"):
        load_beir_folder(folder)
    files = msmarco_files(tmp_path / "m")
    write(files["queries"][1], ["200\twhat colour is the sky", "101\tsnow colour"])
    with pytest.raises(ValueError, match=r"queries.dev.tsv' line 2: duplicate query id '101'"):
        load_user_set(**files)


def test_qrels_refusals(tmp_path):
    files = msmarco_files(tmp_path)
    cases = [
        (["200 0 0 1", "999 0 0 1"], r"line 2: query id '999' is not in the queries file\(s\)"),
        (["200 0 0 1", "201 0 42 1"], r"line 2: corpus id '42' is not in the corpus file"),
        (["200 0 0 1", "201 0 7"], r"line 2: expected 4 whitespace-separated columns \(qid 0 pid rel\)"),
        (["200 0 0 1", "201 0 7 high"], r"line 2: relevance score 'high' is not a number"),
        (["200 0 0 0", "201 0 7 0"], r"has no judgement with score > 0 \(2 lines\)"),
        (["200 0 0 1", "201 0 7 0", "201 0 1 0"], r"query id '201' has no relevance judgements with score > 0"),
        (["200 0 0 1 extra"], r"line 1: expected BEIR qrels .* or TREC qrels"),
    ]
    for lines, message in cases:
        write(files["test_qrels"], lines)
        with pytest.raises(ValueError, match=r"^test_qrels file .*qrels.dev.tsv'.* " + message):
            load_user_set(**files)
    write(files["test_qrels"], ["200 0 0 1"])
    write(files["train_qrels"], ["100\t0\t1\t1", "101\t0\t8\t1"])
    with pytest.raises(ValueError, match=r"^train_qrels file .* line 2: corpus id '8' is not in the corpus file"):
        load_user_set(**files)

    folder = beir_folder(tmp_path / "b")
    write(folder / "qrels" / "test.tsv", [HEADER, "q1\td1\t1", "q2\td3"])
    with pytest.raises(ValueError, match=r"line 3: expected 3 tab-separated columns \(query-id, corpus-id, score\)"):
        load_beir_folder(folder)
    write(folder / "qrels" / "test.tsv", [HEADER])
    with pytest.raises(ValueError, match=r"has no judgement with score > 0 \(0 lines\)"):
        load_beir_folder(folder)
    write(folder / "qrels" / "test.tsv", [HEADER, "q1\td1\t1", "q3\td4\t0", "q4\td2\t0"])
    with pytest.raises(ValueError, match=r"query id 'q3' \(and 1 more\) has no relevance judgements with score > 0"):
        load_beir_folder(folder)
