"""Losses for regressing a bounded clinical outcome that is also judged against a decision threshold.

CTT-Net (Wang et al., IEEE BIBM 2022, arXiv 2212.05794; reference code
github.com/wjh892521292/Cataract_OCT, `utils/loss.py` and `module/trainer_k_fold.py`) predicts the
post-operative visual acuity and calls an operation effective when the acuity gain reaches 0.2
(decimal). Regression metrics alone do not say whether a prediction lands on the right side of that
line, so the reference adds a hinge that is zero when the predicted gain is on the side of the
threshold the true gain is on, and grows linearly with the distance when it is not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def threshold_hinge(margin: jax.Array, label: jax.Array) -> jax.Array:
    """Per-example zero-margin hinge: (1 - y) relu(m) + y relu(-m), with m = predicted value minus
    the threshold and y = 1 where the true value reaches it (the reference's `CVALoss`)."""
    margin = jnp.asarray(margin)
    label = jnp.asarray(label, margin.dtype)
    if margin.shape != label.shape:
        raise ValueError(f"margin {margin.shape} and label {label.shape} must have one shape")
    return (1 - label) * jax.nn.relu(margin) + label * jax.nn.relu(-margin)


def outcome_loss(
    post_pred: jax.Array,
    post_true: jax.Array,
    pre: jax.Array,
    *,
    threshold: float = 0.2,
    hinge_weight: float = 2.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MSE(post) + hinge_weight x mean threshold_hinge(pred gain - threshold, [true gain >= threshold]).

    The reference trains with hinge_weight 2 (`--cls_true`); 0 gives plain MSE (the no-hinge
    ablation). Returns the scalar loss and its parts {"mse", "hinge"}.
    """
    if hinge_weight < 0:
        raise ValueError(f"hinge_weight={hinge_weight} must be >= 0")
    post_pred, post_true, pre = jnp.asarray(post_pred), jnp.asarray(post_true), jnp.asarray(pre)
    if not post_pred.shape == post_true.shape == pre.shape:
        raise ValueError(f"post_pred {post_pred.shape}, post_true {post_true.shape}, pre {pre.shape} must match")
    mse = jnp.mean((post_pred - post_true) ** 2)
    label = (post_true - pre >= threshold).astype(post_pred.dtype)
    hinge = jnp.mean(threshold_hinge(post_pred - pre - threshold, label))
    return mse + hinge_weight * hinge, {"mse": mse, "hinge": hinge}
