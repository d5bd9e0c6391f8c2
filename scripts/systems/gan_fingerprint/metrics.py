"""Detection metrics of the CNNDetection protocol (Wang et al., CVPR 2020, arXiv 1912.11035), which the
fingerprint paper (arXiv 2212.13466) reports: accuracy at the decision threshold and average precision.

- `average_precision`: scikit-learn's definition, AP = sum_n (R_n - R_{n-1}) P_n over the distinct
  score thresholds in decreasing order (no interpolation), with "fake" (label 1) the positive class,
  as CNNDetection's `eval` computes it (`sklearn.metrics.average_precision_score`).
- `accuracies`: the threshold is logit 0 (probability 0.5); the accuracy on real images, on fakes,
  and their mean. The mean is the balanced accuracy, equal to CNNDetection's `acc` on its balanced
  test sets and robust when a set has more of one class.
"""

from __future__ import annotations

import numpy as np


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must be 1-D of one length, got {labels.shape} and {scores.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return labels.astype(np.int64), scores


def average_precision(labels, scores) -> float:
    """AP of ranking fakes (label 1) above reals by `scores` (higher = more likely fake)."""
    labels, scores = _check(labels, scores)
    positives = labels.sum()
    if positives == 0:
        raise ValueError("average precision needs at least one fake (label 1)")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # The last index of each run of equal scores: one operating point per distinct threshold.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def accuracies(labels, logits, threshold: float = 0.0) -> dict[str, float]:
    """Accuracy on reals, on fakes, and their mean, calling `logit > threshold` fake."""
    labels, logits = _check(labels, logits)
    predicted = logits > threshold
    real, fake = labels == 0, labels == 1
    if not real.any() or not fake.any():
        raise ValueError("accuracies need both real (0) and fake (1) images")
    real_acc = float(np.mean(~predicted[real]))
    fake_acc = float(np.mean(predicted[fake]))
    return {"acc": (real_acc + fake_acc) / 2, "real_acc": real_acc, "fake_acc": fake_acc}


def detection_metrics(labels, logits) -> dict[str, float]:
    """{"ap", "acc", "real_acc", "fake_acc"} of one test set."""
    return {"ap": average_precision(labels, logits), **accuracies(labels, logits)}
