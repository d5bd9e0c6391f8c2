"""Detector metrics against scikit-learn, the detector's inputs and batches, its training and model selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import average_precision_score

from frugal.scripts.systems.gan_fingerprint import detector, metrics
from frugal.transforms.image_augment import npr_residual

SIZE = 8


# ---------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    labels[0] = 1
    scores = rng.normal(size=60) + labels
    if seed % 2:  # ties: scores on a coarse grid
        scores = np.round(scores)
    assert metrics.average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_accuracies_against_a_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    logits = rng.normal(size=40)
    out = metrics.accuracies(labels, logits)
    real = [logit <= 0 for logit, y in zip(logits, labels) if y == 0]
    fake = [logit > 0 for logit, y in zip(logits, labels) if y == 1]
    assert out["real_acc"] == pytest.approx(sum(real) / len(real))
    assert out["fake_acc"] == pytest.approx(sum(fake) / len(fake))
    assert out["acc"] == pytest.approx((out["real_acc"] + out["fake_acc"]) / 2)


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 2], [0.1, 0.2], "0 \\(real\\) or 1"),
        ([0, 1], [0.1], "one length"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 0], [0.1, 0.2], "at least one fake"),
    ],
)
def test_metric_errors(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        metrics.average_precision(labels, scores)


def test_accuracy_needs_both_classes():
    with pytest.raises(ValueError, match="both real"):
        metrics.accuracies([1, 1], [0.3, -0.2])


# ---------------------------------------------------------------------------- detector pieces


def _detector(input="rgb", seed=0):
    return detector.Detector(depth=8, width=4, input=input, rngs=nnx.Rngs(seed))


def test_npr_detector_reads_the_npr_residual():
    images = jax.random.uniform(jax.random.key(0), (3, SIZE, SIZE, 3))
    npr = _detector("npr")
    npr.eval()
    assert jnp.allclose(npr(images), npr.backbone(npr_residual(images))[:, 0], atol=1e-6)
    # A nearest-up-sampled image has zero NPR, so every such image gets the same logit.
    blocky = jnp.repeat(jnp.repeat(images[:, ::2, ::2], 2, axis=1), 2, axis=2)
    assert jnp.allclose(npr(blocky), npr(jnp.zeros_like(blocky) + 0.3)[0], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"depth": 18}, "depth=18"), ({"input": "dct"}, "input='dct'"), ({"width": 0}, "width=0")],
)
def test_detector_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detector.Detector(**{"depth": 8, "width": 4, "input": "rgb", **kwargs}, rngs=nnx.Rngs(0))


def test_detector_rejects_grey_images():
    with pytest.raises(ValueError, match="RGB images"):
        _detector()(jnp.zeros((2, SIZE, SIZE, 1)))


def test_unknown_method():
    with pytest.raises(ValueError, match="method='dire' is not known"):
        detector.check_method("dire")


def test_quantize_rounds_onto_the_8bit_grid():
    x = jnp.asarray([-0.1, 0.0, 0.5, 1.0 / 255 * 0.6, 1.2])
    np.testing.assert_allclose(detector.quantize(x), [0, 0, 128 / 255, 1 / 255, 1], atol=1e-7)


def test_balanced_batches_half_real_half_fake_and_deterministic():
    real = np.zeros((10, SIZE, SIZE, 3), np.float32)
    fake = np.ones((7, SIZE, SIZE, 3), np.float32)
    batch_at = detector.balanced_batches(real, fake, 8, seed=3)
    b = batch_at(5, slice(0, 8))
    np.testing.assert_array_equal(b["label"], [0, 0, 0, 0, 1, 1, 1, 1])
    assert (b["image"][:4] == 0).all() and (b["image"][4:] == 1).all()
    rng = np.random.default_rng(0)
    real, fake = rng.random((10, SIZE, SIZE, 3), np.float32), rng.random((7, SIZE, SIZE, 3), np.float32)
    plain = detector.balanced_batches(real, fake, 8, seed=3)(2, slice(0, 8))["image"]
    aug = detector.balanced_batches(real, fake, 8, seed=3, host_augment="blur_jpeg", prob=1.0)
    a, b = aug(2, slice(0, 8))["image"], aug(2, slice(0, 8))["image"]
    np.testing.assert_array_equal(a, b)  # a function of (seed, step): a resumed run sees the same
    assert not np.allclose(a, plain)


def test_host_augmentation_shares_the_plain_compiled_step():
    assert detector.detector_step("blur_jpeg", 0.5, None) is detector.detector_step("none", 0.5, None)


def _toy_sets(n, seed):
    """Reals: smooth patches on the 8-bit grid. Fakes: the same kind of patch plus a period-2
    checkerboard (what a transposed convolution prints)."""
    rng = np.random.default_rng(seed)
    x = rng.random((2 * n, SIZE + 2, SIZE + 2, 3))
    x = sum(x[:, i : i + SIZE, j : j + SIZE] for i in range(3) for j in range(3)) / 9.0
    board = (np.indices((SIZE, SIZE)).sum(0) % 2 * 2 - 1)[None, :, :, None] * 0.06
    real, fake = x[:n], np.clip(x[n:] + board, 0, 1)
    grid = lambda v: (np.rint(v * 255) / 255).astype(np.float32)
    return grid(real), grid(fake)


@pytest.mark.parametrize("method", ["none", "fingerprint"])
def test_detector_learns_a_checkerboard_and_keeps_the_best_step(method):
    real, fake = _toy_sets(96, 0)
    real_val, fake_val = _toy_sets(32, 1)

    class Blur(nnx.Module):  # a stand-in "AE": a 2x2 box low-pass, so F holds the checkerboard
        def __call__(self, x):
            return (x + jnp.roll(x, 1, 1) + jnp.roll(x, 1, 2) + jnp.roll(jnp.roll(x, 1, 1), 1, 2)) / 4

    settings = detector.DetectorSettings(depth=8, width=8, steps=40, batch_size=16, learning_rate=3e-3, eval_every=20)
    run = detector.train_detector(
        method,
        real,
        fake,
        real_val,
        fake_val,
        settings=settings,
        seed=0,
        ae=Blur() if method == "fingerprint" else None,
    )
    assert run.best_step in (20, 40)
    scored = detector.score_set(run.model, real_val, fake_val)
    assert scored == pytest.approx(run.val)  # the kept weights are the selected step's
    assert scored["ap"] > 0.9
    assert [h["step"] for h in run.history if "val_ap" in h] == [20, 40]


def test_fingerprint_method_needs_the_autoencoder():
    real, fake = _toy_sets(4, 0)
    with pytest.raises(ValueError, match="needs the fingerprint autoencoder"):
        detector.train_detector("fingerprint", real, fake, real, fake, settings=detector.DetectorSettings(), seed=0)


def test_odd_batch_is_refused():
    with pytest.raises(ValueError, match="batch_size=7 must be even"):
        detector.DetectorSettings(batch_size=7)
