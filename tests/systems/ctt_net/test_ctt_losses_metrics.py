"""The gain-threshold hinge and MSE loss (transforms/outcome_losses.py) against a NumPy loop of the
reference's CVALoss, and the evaluation figures against scikit-learn's."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from frugal.scripts.systems.ctt_net.metrics import outcome_metrics
from frugal.transforms.outcome_losses import outcome_loss, threshold_hinge


def _reference_cva_loss(x, y):
    out = []
    for xi, yi in zip(x, y):
        out.append((1 - yi) * max(xi, 0.0) + yi * max(-xi, 0.0))
    return np.array(out)


def test_threshold_hinge_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50).astype(np.float32), (rng.uniform(size=50) > 0.5).astype(np.float32)
    np.testing.assert_allclose(np.asarray(threshold_hinge(x, y)), _reference_cva_loss(x, y), rtol=1e-6)


def test_outcome_loss_is_mse_plus_weighted_hinge():
    rng = np.random.default_rng(1)
    pre = rng.uniform(0.05, 0.8, 40).astype(np.float32)
    post = np.clip(pre + rng.normal(0.25, 0.2, 40), 0.01, 1.5).astype(np.float32)
    pred = np.clip(pre + rng.normal(0.2, 0.2, 40), 0.01, 1.5).astype(np.float32)
    loss, parts = outcome_loss(pred, post, pre, hinge_weight=2.0)
    mse = np.mean((pred - post) ** 2)
    hinge = np.mean(_reference_cva_loss(pred - pre - 0.2, (post - pre >= 0.2).astype(np.float32)))
    np.testing.assert_allclose(float(loss), mse + 2 * hinge, rtol=1e-5)
    np.testing.assert_allclose(float(parts["hinge"]), hinge, rtol=1e-5)
    np.testing.assert_allclose(float(outcome_loss(pred, post, pre, hinge_weight=0.0)[0]), mse, rtol=1e-5)
    with pytest.raises(ValueError, match="hinge_weight"):
        outcome_loss(pred, post, pre, hinge_weight=-1.0)
    with pytest.raises(ValueError, match="must match"):
        outcome_loss(pred[:3], post, pre)
    with pytest.raises(ValueError, match="one shape"):
        threshold_hinge(np.zeros(3), np.zeros(4))


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(2)
    pre = rng.uniform(0.05, 0.8, 200)
    post = np.clip(pre + rng.normal(0.25, 0.25, 200), 0.01, 1.5)
    pred = np.clip(post + rng.normal(0, 0.15, 200), 0.01, 1.5)
    m = outcome_metrics(pred, post, pre)
    yt, yp = post - pre >= 0.2, pred - pre >= 0.2
    assert m["accuracy"] == pytest.approx(accuracy_score(yt, yp))
    assert m["precision"] == pytest.approx(precision_score(yt, yp))
    assert m["recall"] == pytest.approx(recall_score(yt, yp))
    assert m["f1"] == pytest.approx(f1_score(yt, yp))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - post) ** 2)))
    assert m["mae_gain"] == pytest.approx(np.mean(np.abs((pred - pre) - (post - pre))))
    none_predicted = outcome_metrics(pre, post, pre)  # predicts no gain: no positives
    assert none_predicted["precision"] == 0.0 and none_predicted["f1"] == 0.0
    with pytest.raises(ValueError, match="equal non-empty"):
        outcome_metrics(pred[:3], post, pre)
