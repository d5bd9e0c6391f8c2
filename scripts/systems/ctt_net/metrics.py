"""The reference's evaluation of a post-operative acuity predictor (github.com/wjh892521292/Cataract_OCT,
`module/trainer_k_fold.py`): RMSE of the post-op decimal VA, MAE of the predicted gain, and accuracy,
precision, recall and F1 of the binary "gain >= 0.2" call."""

from __future__ import annotations

import numpy as np

from frugal.scripts.systems.ctt_net.eye_data import GAIN_THRESHOLD

METRICS = ("rmse", "mae_gain", "accuracy", "precision", "recall", "f1")
LOWER_IS_BETTER = {"rmse": True, "mae_gain": True, "accuracy": False, "precision": False, "recall": False, "f1": False}


def outcome_metrics(post_pred, post_true, pre, *, threshold: float = GAIN_THRESHOLD) -> dict[str, float]:
    """All six figures for one test set (precision/recall/F1 are 0 when their denominator is)."""
    post_pred, post_true, pre = (np.asarray(a, np.float64) for a in (post_pred, post_true, pre))
    if not post_pred.shape == post_true.shape == pre.shape or post_pred.ndim != 1 or len(post_pred) == 0:
        raise ValueError(
            f"need three equal non-empty 1-D arrays, got {post_pred.shape}, {post_true.shape}, {pre.shape}"
        )
    pred_pos = post_pred - pre >= threshold
    true_pos = post_true - pre >= threshold
    tp = float(np.sum(pred_pos & true_pos))
    precision = tp / pred_pos.sum() if pred_pos.any() else 0.0
    recall = tp / true_pos.sum() if true_pos.any() else 0.0
    return {
        "rmse": float(np.sqrt(np.mean((post_pred - post_true) ** 2))),
        "mae_gain": float(np.mean(np.abs((post_pred - pre) - (post_true - pre)))),
        "accuracy": float(np.mean(pred_pos == true_pos)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
    }
