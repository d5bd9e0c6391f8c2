"""frugal.scripts.systems.block_skim.qa_data and the QA metrics/decoding in frugal.models.bert_qa.

Windows, loaders, bad input, SQuAD scores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.models.bert_qa import best_spans, decode_answers, f1_score, normalize_answer, squad_scores
from frugal.scripts.systems.block_skim.qa_data import QAExample, featurize, load_squad, make_fact_qa, plain_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return plain_tokenizer()


HARD = dict(distractors=3, context_tokens=(300, 360))  # the look-alike-facts variant


@pytest.fixture(scope="module")
def facts(tokenizer):
    return make_fact_qa(12, seed=3, tokenizer=tokenizer, **HARD)


def test_fact_set_is_seeded_and_answers_point_at_the_fact(facts, tokenizer):
    again = make_fact_qa(12, seed=3, tokenizer=tokenizer, **HARD)
    assert again == facts
    assert make_fact_qa(2, seed=4, tokenizer=tokenizer, **HARD)[0] != facts[0]
    for ex in facts:
        ((text, start),) = ex.answers
        assert ex.context[start : start + len(text)] == text
        n_tokens = len(tokenizer.encode(ex.context, add_special_tokens=False).ids)
        assert 280 <= n_tokens <= 380  # default (300, 360) target; filler sentences are whole
        # The sentence carrying the answer shares the question's subject.
        sentence_start = ex.context.rfind(". ", 0, start) + 2 if ex.context.rfind(". ", 0, start) >= 0 else 0
        sentence = ex.context[sentence_start : ex.context.find(".", start + len(text)) + 1]
        content = {w.lower() for w in ex.question.rstrip("?").split() if len(w) > 3} - {"what", "when", "which"}
        assert len(content & {w.lower() for w in sentence.rstrip(".").split()}) >= 2, (ex.question, sentence)


def test_default_set_has_one_invented_sentence_the_answer(tokenizer):
    from frugal.scripts.systems.block_skim.bounds import fact_character_mask
    from frugal.scripts.systems.block_skim.qa_data import filler_sentences

    filler = filler_sentences()
    for ex in make_fact_qa(6, seed=5, tokenizer=tokenizer):
        ((text, start),) = ex.answers
        assert 420 <= len(tokenizer.encode(ex.context, add_special_tokens=False).ids) <= 500
        invented = np.flatnonzero(fact_character_mask(ex.context, filler))
        # Everything outside the filler sentences lies in the one sentence that carries the answer.
        previous_stop = ex.context.rfind(". ", 0, start)
        sentence_start = previous_stop + 2 if previous_stop >= 0 else 0
        sentence_end = ex.context.find(".", start + len(text)) + 1
        assert invented.min() >= sentence_start and invented.max() < sentence_end, ex.context
    with pytest.raises(ValueError, match="distractors"):
        make_fact_qa(1, distractors=-1, tokenizer=tokenizer)


def test_windows_cover_long_contexts_without_truncation(facts, tokenizer):
    ex = facts[0]
    feats = featurize([ex], tokenizer, max_seq_len=96, doc_stride=32)
    assert len(feats) > 3 and feats.input_ids.shape[1] == 96
    assert np.all(feats.num_tokens <= 96)
    c_ids = tokenizer.encode(ex.context, add_special_tokens=False).ids
    covered = set()
    for w in range(len(feats)):
        ctx = feats.context_mask[w] > 0
        covered.update(map(tuple, feats.offsets[w][ctx].tolist()))
    assert len(covered) == len(c_ids)  # every context token is in some window
    ((text, _),) = ex.answers
    labelled = [w for w in range(len(feats)) if feats.start_positions[w] > 0]
    assert labelled
    for w in labelled:
        a = feats.offsets[w, feats.start_positions[w], 0]
        b = feats.offsets[w, feats.end_positions[w], 1]
        assert ex.context[a:b] == text
    # Decoding with the gold span as logits recovers the answer across windows.
    start = np.full(feats.input_ids.shape, -5.0)
    end = np.full(feats.input_ids.shape, -5.0)
    start[labelled[0], feats.start_positions[labelled[0]]] = 5.0
    end[labelled[0], feats.end_positions[labelled[0]]] = 5.0
    assert decode_answers(feats, start, end, [ex]) == {ex.qid: text}


def test_bad_questions_and_contexts(tokenizer):
    with pytest.raises(ValueError, match="'question' is empty"):
        QAExample("q1", "   ", "Some context.", ())
    blank = QAExample("q2", "\u200b\x00", "Some context.", ())
    with pytest.raises(ValueError, match="'question'.*has no tokens"):
        featurize([blank], tokenizer)
    with pytest.raises(ValueError, match="answer_start"):
        QAExample("q3", "Who?", "Ada wrote it.", (("Ada", 4),))
    with pytest.raises(ValueError, match="max_query_len"):
        featurize([QAExample("q4", "Who?", "Ada wrote it.", (("Ada", 0),))], tokenizer, max_query_len=0)


def _squad(tmp_path, data):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def test_load_squad_v1_and_v2(tmp_path):
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "Ada Lovelace wrote the first program.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "Who wrote the first program?",
                                "answers": [{"text": "Ada Lovelace", "answer_start": 0}],
                            },
                            {"id": "b", "question": "Who read it?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    examples = load_squad(_squad(tmp_path, data))
    assert [e.qid for e in examples] == ["a", "b"]
    assert examples[0].answers == (("Ada Lovelace", 0),) and examples[1].answers == ()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"nodata": []}, "lacks field 'data'"),
        (
            {"data": [{"paragraphs": [{"context": "x y", "qas": [{"id": "a", "answers": []}]}]}]},
            "lacks field 'question'",
        ),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, "lacks field 'context'"),
        (
            {"data": [{"paragraphs": [{"context": "x y", "qas": [{"question": "", "answers": []}]}]}]},
            "'question'.*empty",
        ),
        (
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "x y",
                                "qas": [{"question": "q?", "answers": [{"text": "y", "answer_start": 0}]}],
                            }
                        ]
                    }
                ]
            },
            "answer_start=0",
        ),
        (
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "x y",
                                "qas": [{"question": "q?", "answers": [{"text": "y", "answer_start": "2"}]}],
                            }
                        ]
                    }
                ]
            },
            "'answer_start'.*must be int",
        ),
    ],
)
def test_malformed_squad_files_name_the_field(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        load_squad(_squad(tmp_path, data))


def test_squad_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="SQuAD path"):
        load_squad(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_squad(bad)


def test_squad_metrics_golden_values():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert f1_score("the cat sat", "a cat sat on the mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1_score("", "") == 1.0 and f1_score("x", "") == 0.0
    examples = [
        QAExample("1", "q?", "Ada Lovelace", (("Ada Lovelace", 0), ("Lovelace", 4))),
        QAExample("2", "q?", "Paris is big", (("Paris", 0),)),
    ]
    scores = squad_scores({"1": "lovelace", "2": "big"}, examples)
    assert scores == {"exact_match": 50.0, "f1": 50.0}
    with pytest.raises(ValueError, match="lack"):
        squad_scores({"1": "x"}, examples)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_best_spans_matches_brute_force(seed, max_len):
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(2, 12))
    end = rng.normal(size=(2, 12))
    start[1, 5] = -np.inf  # a pruned position is never chosen
    ctx = np.zeros((2, 12), np.int32)
    ctx[:, 3:11] = 1
    s, e, score = best_spans(start, end, ctx, max_answer_len=max_len)
    for r in range(2):
        best = max(
            (start[r, i] + end[r, j], i, j)
            for i in range(3, 11)
            for j in range(i, min(i + max_len, 11))
            if np.isfinite(start[r, i] + end[r, j])
        )
        assert (s[r], e[r]) == best[1:] and score[r] == pytest.approx(best[0])
