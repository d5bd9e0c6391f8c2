"""Extractive QA data: a SQuAD v1.1/v2.0 JSON loader, the built-in offline QA set, and windowed features.

The built-in set (`make_fact_qa`) is generated offline and seeded. Each passage is a few hundred
WordPiece tokens of real English sentences (the dataset descriptions that ship inside scikit-learn and
the docstrings of Python's standard library) with one invented sentence that states the answer ("The
capital of Veloria is Ostbury."). By default every other block is real text that does not bear on the
question (by default ~15 blocks of 32 tokens, of which the answer fills one or two): the setting
Block-Skim is built for. `distractors=N` adds *look-alike facts* that state the same relation about
other entities or other relations about the same entity, so a model must match both the entity and
the relation of the question; that harder set also leaves an early skim predictor far less to drop.

`featurize` turns examples into fixed windows `[CLS] question [SEP] context-window [SEP]`. A context
longer than the window is split into overlapping windows (never truncated): consecutive windows
start `doc_stride` context tokens apart (the original BERT `doc_stride` meaning), and answers are
decoded per example by taking the best-scoring span over all its windows.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# Examples


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question over one context; answers are (text, char_start) pairs (empty: unanswerable)."""

    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]

    def __post_init__(self):
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"example {self.qid!r}: field 'question' is empty")
        if not isinstance(self.context, str) or not self.context.strip():
            raise ValueError(f"example {self.qid!r}: field 'context' is empty")
        for text, start in self.answers:
            if not isinstance(start, int) or start < 0 or self.context[start : start + len(text)] != text:
                raise ValueError(
                    f"example {self.qid!r}: answer {text!r} at answer_start={start} does not match "
                    "the context text there"
                )


def load_squad(path: str | Path, *, max_examples: int | None = None) -> list[QAExample]:
    """Reads a SQuAD v1.1 or v2.0 JSON file (the official layout) at a user path; nothing downloads.

    Unanswerable v2.0 questions (`is_impossible`) get no answers. Malformed files raise ValueError
    naming the missing or wrong field and where it is.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SQuAD path {path} does not exist (download train-v1.1.json / dev-v2.0.json yourself and pass its path)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"SQuAD file {path} is not valid JSON: {err}") from None

    def need(obj, key, kind, where):
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"SQuAD file {path}: {where} lacks field '{key}'")
        if not isinstance(obj[key], kind):
            raise ValueError(
                f"SQuAD file {path}: field '{key}' at {where} must be {kind.__name__}, got {type(obj[key]).__name__}"
            )
        return obj[key]

    examples = []
    for a, article in enumerate(need(raw, "data", list, "the top level")):
        for p, paragraph in enumerate(need(article, "paragraphs", list, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = need(paragraph, "context", str, where)
            for q, qa in enumerate(need(paragraph, "qas", list, where)):
                qwhere = f"{where}.qas[{q}]"
                question = need(qa, "question", str, qwhere)
                qid = str(qa.get("id", f"{a}-{p}-{q}"))
                if not question.strip():
                    raise ValueError(f"SQuAD file {path}: field 'question' at {qwhere} is empty")
                answers = []
                if not qa.get("is_impossible", False):
                    for k, ans in enumerate(need(qa, "answers", list, qwhere)):
                        text = need(ans, "text", str, f"{qwhere}.answers[{k}]")
                        start = need(ans, "answer_start", int, f"{qwhere}.answers[{k}]")
                        if context[start : start + len(text)] != text:
                            raise ValueError(
                                f"SQuAD file {path}: answer_start={start} at {qwhere}.answers[{k}] "
                                f"does not point at its text {text!r}"
                            )
                        answers.append((text, start))
                examples.append(QAExample(qid, question, context, tuple(answers)))
                if max_examples is not None and len(examples) >= max_examples:
                    return examples
    if not examples:
        raise ValueError(f"SQuAD file {path} holds no questions")
    return examples


# --------------------------------------------------------------------------------------------
# The built-in offline set

_STDLIB_MODULES = (
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "doctest",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "gettext",
    "glob",
    "heapq",
    "hmac",
    "inspect",
    "io",
    "itertools",
    "json",
    "locale",
    "logging",
    "math",
    "operator",
    "optparse",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shutil",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "typing",
    "unittest",
    "uuid",
    "warnings",
    "weakref",
    "zipfile",
)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_GOOD_SENTENCE_RE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-]+[.]$")


def filler_sentences() -> list[str]:
    """Real English sentences that ship offline: scikit-learn dataset descriptions + stdlib docstrings."""
    import importlib
    import warnings

    import sklearn.datasets as skd

    texts = [
        getattr(skd, name)().DESCR
        for name in ("load_iris", "load_diabetes", "load_digits", "load_wine", "load_breast_cancer", "load_linnerud")
    ]
    with warnings.catch_warnings():  # some stdlib attributes warn on access (typing.io, ...)
        warnings.simplefilter("ignore")
        for name in _STDLIB_MODULES:
            module = importlib.import_module(name)
            texts.append(module.__doc__ or "")
            for attr in sorted(dir(module)):
                if not attr.startswith("_"):
                    texts.append(getattr(getattr(module, attr, None), "__doc__", None) or "")
    sentences = set()
    for text in texts:
        if not isinstance(text, str):
            continue
        for sentence in _SENTENCE_RE.split(" ".join(text.split())):
            words = sentence.split()
            if 6 <= len(words) <= 32 and _GOOD_SENTENCE_RE.match(sentence):
                sentences.add(sentence)
    return sorted(sentences)


_SYLLABLES = (
    "ka",
    "lo",
    "ve",
    "ri",
    "mon",
    "tal",
    "dor",
    "sen",
    "bri",
    "ul",
    "na",
    "ther",
    "gal",
    "pe",
    "ros",
    "vin",
    "ca",
    "mel",
    "dra",
    "fen",
    "lis",
    "or",
    "tu",
    "bel",
    "quo",
    "zan",
    "har",
    "mi",
    "sto",
    "ne",
)
_LAND_SUFFIX = ("ia", "land", "stan", "ora", "ovia", "mark")
_CITY_SUFFIX = ("bury", "ton", "ford", "haven", "burg", "polis", "field", "mouth")
_FIRST_NAMES = (
    "Marta",
    "Jonas",
    "Ilse",
    "Tomas",
    "Greta",
    "Anton",
    "Lena",
    "Pavel",
    "Nora",
    "Emil",
    "Vera",
    "Oskar",
    "Hana",
    "Felix",
    "Ada",
    "Rurik",
    "Selma",
    "Ivo",
    "Dana",
    "Leif",
)
_DEVICES = (
    "steam loom",
    "pocket barometer",
    "cable ferry",
    "lens grinder",
    "water clock",
    "sail pump",
    "rope bridge",
    "ink press",
    "wind organ",
    "salt evaporator",
    "glass furnace",
    "signal lamp",
    "seed drill",
    "tide gauge",
    "copper kettle",
    "spring scale",
)


def _name(rng: np.random.Generator, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES, size=parts)).capitalize()


# (question template, fact template, answer field, subject kind, answer kind)
_RELATIONS = (
    ("What is the capital of {land}?", "The capital of {land} is {city}.", "city", "land"),
    ("When was {city} founded?", "The town of {city} was founded in {year}.", "year", "city"),
    ("Which river flows through {city}?", "The {river} River flows through {city}.", "river", "city"),
    ("Who invented the {device}?", "The {device} was invented by {person}.", "person", "device"),
    ("What is the population of {city}?", "{city} has a population of {number} people.", "number", "city"),
    ("What is the highest mountain in {land}?", "The highest mountain in {land} is Mount {mount}.", "mount", "land"),
    ("What is the official language of {land}?", "The official language of {land} is {lang}.", "lang", "land"),
    ("Who was the first mayor of {city}?", "{person} was the first mayor of {city}.", "person", "city"),
)


def _entities(rng: np.random.Generator) -> dict[str, str]:
    return {
        "land": _name(rng, 2) + str(rng.choice(_LAND_SUFFIX)),
        "city": _name(rng, 2) + str(rng.choice(_CITY_SUFFIX)),
        "year": str(int(rng.integers(1100, 1950))),
        "river": _name(rng, 2),
        "device": str(rng.choice(_DEVICES)),
        "person": f"{rng.choice(_FIRST_NAMES)} {_name(rng, 2)}",
        "number": f"{int(rng.integers(2, 900)) * 1000 + int(rng.integers(0, 1000)):,}",
        "mount": _name(rng, 2),
        "lang": _name(rng, 2) + "ish",
    }


def _fact(relation, ents) -> tuple[str, str]:
    _, fact, answer_field, _ = relation
    return fact.format(**ents), ents[answer_field]


def make_fact_qa(
    n: int, *, seed: int = 0, context_tokens: tuple[int, int] = (440, 490), tokenizer=None, distractors: int = 0
) -> list[QAExample]:
    """`n` seeded examples: a ~context_tokens-long passage of real sentences with one answer fact.

    By default (distractors=0) the answer fact is the only invented sentence; the other blocks are
    real filler text. `distractors` adds look-alike facts per passage, alternating the same relation
    about another subject and another relation about the same subject, each a separate sentence
    placed at random among the filler (3 gives the harder set, used with context_tokens=(300, 360)).
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if distractors < 0:
        raise ValueError(f"distractors={distractors} must be >= 0")
    lo, hi = context_tokens
    if not 16 <= lo <= hi:
        raise ValueError(f"context_tokens={context_tokens} must be (lo, hi) with 16 <= lo <= hi")
    if tokenizer is None:
        tokenizer = plain_tokenizer()
    pool = filler_sentences()
    lengths = {s: len(tokenizer.encode(s, add_special_tokens=False).ids) for s in pool}
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(n):
        r = int(rng.integers(len(_RELATIONS)))
        relation = _RELATIONS[r]
        ents = _entities(rng)
        fact, answer = _fact(relation, ents)
        question = relation[0].format(**ents)
        facts = []
        for d in range(distractors):
            other = _entities(rng)
            candidates = [x for x in _RELATIONS if x[3] == relation[3] and x is not relation]
            if d % 2 == 0 or not candidates:  # same relation, other subject
                fact_d, _ = _fact(relation, other)
            else:  # another relation about the same subject
                other[relation[3]] = ents[relation[3]]
                fact_d, _ = _fact(candidates[int(rng.integers(len(candidates)))], other)
            facts.append(fact_d)
        budget = int(rng.integers(lo, hi + 1)) - sum(
            len(tokenizer.encode(f, add_special_tokens=False).ids) for f in facts + [fact]
        )
        filler = []
        while budget > 0:
            s = pool[int(rng.integers(len(pool)))]
            if lengths[s] <= budget or not filler:
                filler.append(s)
                budget -= lengths[s]
            else:
                budget -= 4  # try shorter ones; ends the loop when nothing fits
        sentences = filler + facts
        order = list(rng.permutation(len(sentences) + 1))
        slots = [None] * (len(sentences) + 1)
        for item, slot in zip(sentences + [fact], order):
            slots[slot] = item
        context = ""
        answer_start = -1
        for item in slots:
            if context:
                context += " "
            if item is fact:
                answer_start = len(context) + fact.index(answer)
            context += item
        examples.append(QAExample(f"fact-{seed}-{index}", question, context, ((answer, answer_start),)))
    return examples


# --------------------------------------------------------------------------------------------
# Windowed features


def plain_tokenizer():
    """The MiniLM WordPiece tokenizer without padding or truncation (windows are cut here instead)."""
    from tokenizers import Tokenizer

    from frugal.models.bert import minilm_dir

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@dataclasses.dataclass
class QAFeatures:
    """Windows as arrays of shape (num_windows, max_seq_len) plus what decoding needs."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    context_mask: np.ndarray  # 1 where the token is context (answers may only be there)
    start_positions: np.ndarray  # 0 (CLS) when the window does not hold the answer
    end_positions: np.ndarray
    offsets: np.ndarray  # (W, S, 2) char offsets into the example's context; -1 outside the context
    example_index: np.ndarray  # (W,) which example each window belongs to
    question_length: np.ndarray  # (W,) tokens of [CLS] question [SEP]
    num_tokens: np.ndarray  # (W,) real tokens in the window

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, rows) -> QAFeatures:
        return QAFeatures(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})


def featurize(
    examples: Sequence[QAExample],
    tokenizer,
    *,
    max_seq_len: int = 384,
    doc_stride: int = 128,
    max_query_len: int = 64,
    pad_to: int | None = None,
) -> QAFeatures:
    """Cuts each example into windows of at most `max_seq_len` tokens (see the module docstring).

    pad_to: pad every window to this many tokens (default max_seq_len). Questions longer than
    `max_query_len` tokens are cut to it (as BERT does); a question with no tokens raises ValueError.
    """
    if max_seq_len < 16:
        raise ValueError(f"max_seq_len={max_seq_len} must be >= 16")
    if not doc_stride >= 1:
        raise ValueError(f"doc_stride={doc_stride} must be >= 1")
    if not 1 <= max_query_len <= max_seq_len - 8:
        raise ValueError(f"max_query_len={max_query_len} must be between 1 and max_seq_len - 8")
    pad_to = max_seq_len if pad_to is None else pad_to
    if pad_to < max_seq_len:
        raise ValueError(f"pad_to={pad_to} must be >= max_seq_len={max_seq_len}")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    rows: dict[str, list] = {f.name: [] for f in dataclasses.fields(QAFeatures)}
    for e, example in enumerate(examples):
        if not example.question.strip():
            raise ValueError(f"example {example.qid!r}: field 'question' is empty")
        q_ids = tokenizer.encode(example.question, add_special_tokens=False).ids[:max_query_len]
        if not q_ids:
            raise ValueError(f"example {example.qid!r}: field 'question' {example.question!r} has no tokens")
        c_enc = tokenizer.encode(example.context, add_special_tokens=False)
        c_ids, c_off = c_enc.ids, c_enc.offsets
        if not c_ids:
            raise ValueError(f"example {example.qid!r}: field 'context' has no tokens")
        answer_tokens = []
        for text, start in example.answers:
            end = start + len(text)
            toks = [i for i, (a, b) in enumerate(c_off) if a < end and b > start]
            if toks:
                answer_tokens.append((toks[0], toks[-1]))
        room = max_seq_len - len(q_ids) - 3
        window_starts = list(range(0, max(len(c_ids) - room, 0) + 1, doc_stride))
        if window_starts[-1] + room < len(c_ids):
            window_starts.append(len(c_ids) - room)
        for w0 in window_starts:
            w1 = min(w0 + room, len(c_ids))
            ids = [cls_id] + q_ids + [sep_id] + c_ids[w0:w1] + [sep_id]
            n_q = len(q_ids) + 2
            types = [0] * n_q + [1] * (w1 - w0 + 1)
            offsets = [(-1, -1)] * n_q + list(c_off[w0:w1]) + [(-1, -1)]
            start_pos = end_pos = 0
            for a, b in answer_tokens:  # the first answer that fits wholly in the window is the label
                if w0 <= a and b < w1:
                    start_pos, end_pos = a - w0 + n_q, b - w0 + n_q
                    break
            pad = pad_to - len(ids)
            rows["input_ids"].append(ids + [0] * pad)
            rows["token_type_ids"].append(types + [0] * pad)
            rows["attention_mask"].append([1] * len(ids) + [0] * pad)
            rows["context_mask"].append([0] * n_q + [1] * (w1 - w0) + [0] * (1 + pad))
            rows["start_positions"].append(start_pos)
            rows["end_positions"].append(end_pos)
            rows["offsets"].append(offsets + [(-1, -1)] * pad)
            rows["example_index"].append(e)
            rows["question_length"].append(n_q)
            rows["num_tokens"].append(len(ids))
            if w1 >= len(c_ids):
                break
    if not rows["input_ids"]:
        raise ValueError("examples is empty")
    arrays = {k: np.asarray(v, np.int32) for k, v in rows.items()}
    return QAFeatures(**arrays)
