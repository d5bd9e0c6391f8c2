"""Extractive question answering on a BERT-family encoder: span head, span decoding, SQuAD EM/F1.

`BertForQuestionAnswering` is the encoder plus one `nnx.Linear(hidden, 2)` giving start and end
logits per token (the Hugging Face `qa_outputs` head). Its parts follow a small protocol that
`frugal.transforms.block_skim` drives layer by layer without importing this module:

- `model.encoder.embeddings(input_ids, token_type_ids) -> (B, S, hidden)`
- `model.encoder.layers[i](x, mask_bias) -> (x, attention_probs (B, heads, S, S))`
- `model.qa_outputs(x) -> (B, S, 2)`

Decoding takes the best span with start <= end < start + max_answer_len over context tokens only,
across all windows of an example; the SQuAD metrics use the official normalization (lowercase,
strip punctuation, the articles a/an/the, and extra whitespace).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.models.bert import BertConfig, BertEncoder, load_bert, minilm_dir
from frugal.transforms.initializers import Linear


def attention_bias(attention_mask: jax.Array) -> jax.Array:
    """(B, S) 1/0 mask -> additive (B, 1, 1, S) bias: padding keys get no attention."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


class BertForQuestionAnswering(nnx.Module):
    """A BERT encoder with a start/end span head."""

    def __init__(self, encoder: BertEncoder, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.config: BertConfig = encoder.config
        self.qa_outputs = Linear(encoder.config.hidden_size, 2, rngs=rngs)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, return_attention: bool = False):
        """(start_logits, end_logits), each (B, S); with return_attention, also the per-layer probabilities."""
        out = self.encoder(input_ids, attention_mask, token_type_ids, return_attention=return_attention)
        hidden, probs = out if return_attention else (out, None)
        logits = self.qa_outputs(hidden)
        start, end = logits[..., 0], logits[..., 1]
        return (start, end, probs) if return_attention else (start, end)


def qa_model_from_minilm(*, seed: int = 0) -> BertForQuestionAnswering:
    """The pretrained all-MiniLM-L6-v2 encoder with a fresh (seeded) span head."""
    return BertForQuestionAnswering(load_bert(minilm_dir()), rngs=nnx.Rngs(seed))


def qa_loss(start_logits, end_logits, start_positions, end_positions, attention_mask) -> jax.Array:
    """Mean of the start and end cross-entropies over real tokens (the Hugging Face QA loss)."""
    neg = jnp.finfo(jnp.float32).min
    total = 0.0
    for logits, target in ((start_logits, start_positions), (end_logits, end_positions)):
        logits = jnp.where(attention_mask > 0, logits, neg)
        logp = jax.nn.log_softmax(logits, axis=-1)
        total = total - jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0].mean()
    return total / 2


# --------------------------------------------------------------------------------------------
# Span decoding


def best_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, context_mask: np.ndarray, *, max_answer_len: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, argmax of start+end over context spans with start <= end < start + max_answer_len.

    Returns (start, end, score); rows with no context token get score -inf and span (0, 0).
    Logits of -inf (e.g. positions a skim model pruned) are simply never chosen.
    """
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len={max_answer_len} must be >= 1")
    start_logits = np.asarray(start_logits, np.float64)
    end_logits = np.asarray(end_logits, np.float64)
    ok = np.asarray(context_mask) > 0
    b, s = start_logits.shape
    i = np.arange(s)
    allowed = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_len)  # [start, end]
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    valid = allowed[None] & ok[:, :, None] & ok[:, None, :]
    scores = np.where(valid & np.isfinite(scores), scores, -np.inf)
    flat = scores.reshape(b, -1).argmax(-1)
    best = scores.reshape(b, -1)[np.arange(b), flat]
    start, end = flat // s, flat % s
    none = ~np.isfinite(best)
    start[none], end[none] = 0, 0
    return start, end, best


def decode_answers(
    features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    examples: Sequence,
    *,
    max_answer_len: int = 30,
    allow_null: bool = False,
) -> dict[str, str]:
    """qid -> predicted answer text: the best span over all of an example's windows.

    allow_null (SQuAD v2.0): answer "" when the [CLS] score beats the best span in every window.
    """
    start, end, score = best_spans(start_logits, end_logits, features.context_mask, max_answer_len=max_answer_len)
    null = np.asarray(start_logits)[:, 0] + np.asarray(end_logits)[:, 0]
    best: dict[int, tuple[float, str]] = {}
    best_null: dict[int, float] = {}
    for w in range(len(start)):
        e = int(features.example_index[w])
        best_null[e] = min(best_null.get(e, np.inf), float(null[w]))
        if not np.isfinite(score[w]):
            continue
        a = int(features.offsets[w, start[w], 0])
        b = int(features.offsets[w, end[w], 1])
        text = examples[e].context[a:b]
        if e not in best or score[w] > best[e][0]:
            best[e] = (float(score[w]), text)
    out = {}
    for e, example in enumerate(examples):
        if e not in best_null:
            continue
        span_score, text = best.get(e, (-np.inf, ""))
        out[example.qid] = "" if allow_null and best_null[e] > span_score else text
    return out


# --------------------------------------------------------------------------------------------
# SQuAD metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (the official SQuAD rule)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: Sequence) -> dict[str, float]:
    """{'exact_match', 'f1'} in percent, each the max over an example's gold answers (unanswerable: "")."""
    if not examples:
        raise ValueError("examples is empty")
    em = f1 = 0.0
    for example in examples:
        if example.qid not in predictions:
            raise ValueError(f"predictions lack question {example.qid!r}")
        golds = [text for text, _ in example.answers] or [""]
        pred = predictions[example.qid]
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    n = len(examples)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}
