"""frugal.models.fastspeech2: length regulation, padding invariance, teacher forcing, loss, overfit, jit."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from frugal.models.fastspeech2 import (
    CPU,
    PAPER,
    FastSpeech2,
    FastSpeech2Config,
    bin_edges,
    bucketize,
    fastspeech2_loss,
    length_regulate,
)

TINY = FastSpeech2Config(
    vocab_size=20,
    d_model=32,
    heads=2,
    encoder_layers=1,
    decoder_layers=1,
    conv_filter=64,
    variance_filter=32,
    n_bins=16,
    n_mels=8,
    postnet=False,
    max_positions=256,
    pitch_range=(-2.0, 2.0),
    energy_range=(-2.0, 2.0),
)


def _model(config=TINY, seed=0, *, train=False):
    model = FastSpeech2(config, rngs=nnx.Rngs(seed))
    model.train() if train else model.eval()
    return model


@functools.partial(nnx.jit, static_argnames=("max_frames", "duration_scale", "pitch_scale", "energy_shift"))
def _forward(model, ph, mask, durations=None, pitch=None, energy=None, *, max_frames, **controls):
    """The model under nnx.jit (most tests use it: one compile per shape instead of op-by-op dispatch)."""
    return model(ph, mask, max_frames=max_frames, durations=durations, pitch=pitch, energy=energy, **controls)


def _regulate_reference(hidden, durations, max_frames):
    b, _, d = hidden.shape
    frames = np.zeros((b, max_frames, d), np.float32)
    mask = np.zeros((b, max_frames), bool)
    for i in range(b):
        rows = np.repeat(hidden[i], durations[i], axis=0)[:max_frames]
        frames[i, : len(rows)] = rows
        mask[i, : len(rows)] = True
    return frames, mask


def test_length_regulate_matches_numpy_repeat():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 6, 5)).astype(np.float32)
    durations = np.array(
        [
            [2, 0, 3, 1, 0, 4],  # zero durations in the middle
            [0, 0, 0, 0, 0, 0],  # no frames at all
            [5, 5, 5, 5, 5, 5],  # 30 frames > max_frames: truncated
            [0, 1, 0, 0, 0, 2],
        ],
        np.int32,
    )
    max_frames = 12
    frames, mask = length_regulate(jnp.asarray(hidden), jnp.asarray(durations), max_frames)
    ref_frames, ref_mask = _regulate_reference(hidden, durations, max_frames)
    np.testing.assert_array_equal(np.asarray(mask), ref_mask)
    np.testing.assert_allclose(np.asarray(frames), ref_frames, rtol=0, atol=0)
    assert np.asarray(mask).sum(axis=1).tolist() == [10, 0, 12, 3]


def test_length_regulate_jits_and_rejects_bad_arguments():
    hidden = jnp.ones((1, 3, 2))
    durations = jnp.array([[1, 2, 3]], jnp.int32)
    jitted = jax.jit(length_regulate, static_argnums=2)
    frames, mask = jitted(hidden, durations, 8)
    assert frames.shape == (1, 8, 2) and int(mask.sum()) == 6
    with pytest.raises(ValueError, match="max_frames"):
        length_regulate(hidden, durations, 0)
    with pytest.raises(ValueError, match="durations must be >= 0"):
        length_regulate(hidden, jnp.array([[1, -1, 2]], jnp.int32), 4)
    with pytest.raises(ValueError, match="durations must have shape"):
        length_regulate(hidden, jnp.array([[1, 2]], jnp.int32), 4)


def test_bucketize_matches_np_digitize():
    edges = bin_edges((-2.0, 2.0), 16)
    assert edges.shape == (15,) and edges[0] == -2.0 and edges[-1] == 2.0
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.uniform(-3, 3, size=200), edges, [-10.0, 10.0]]).astype(np.float32)
    got = np.asarray(bucketize(jnp.asarray(values), edges))
    np.testing.assert_array_equal(got, np.digitize(values, edges, right=True))
    assert got.min() == 0 and got.max() == 15


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="heads"):
        dataclasses.replace(TINY, heads=3)
    with pytest.raises(ValueError, match="conv_kernels"):
        dataclasses.replace(TINY, conv_kernels=(8, 1))
    with pytest.raises(ValueError, match="pitch_range"):
        dataclasses.replace(TINY, pitch_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="dropout"):
        dataclasses.replace(TINY, dropout=1.0)
    with pytest.raises(ValueError, match="n_bins"):
        dataclasses.replace(TINY, n_bins=1)
    assert dataclasses.replace(PAPER, vocab_size=77).vocab_size == 77
    assert CPU.d_model == 128 and not CPU.postnet and PAPER.postnet


def test_call_rejects_bad_arguments():
    model = _model()
    ph = jnp.array([[1, 2, 3]], jnp.int32)
    mask = jnp.ones((1, 3), bool)
    with pytest.raises(ValueError, match="phonemes"):
        model(ph[0], mask[0], max_frames=4)
    with pytest.raises(ValueError, match="phonemes"):
        model(ph.astype(jnp.float32), mask, max_frames=4)
    with pytest.raises(ValueError, match="phoneme_mask"):
        model(ph, mask[:, :2], max_frames=4)
    with pytest.raises(ValueError, match="vocab_size"):
        model(jnp.array([[1, 2, 20]], jnp.int32), mask, max_frames=4)
    with pytest.raises(ValueError, match="durations"):
        model(ph, mask, max_frames=4, durations=jnp.array([[1, -2, 1]], jnp.int32))
    with pytest.raises(ValueError, match="durations"):
        model(ph, mask, max_frames=4, durations=jnp.array([[1, 2]], jnp.int32))
    with pytest.raises(ValueError, match="max_frames"):
        model(ph, mask, max_frames=0)
    with pytest.raises(ValueError, match="pitch"):
        model(ph, mask, max_frames=4, pitch=jnp.zeros((1, 2)))


def _utterances():
    """Two utterances of 5 and 3 phonemes, padded to 5, with durations, pitch and energy."""
    ph = jnp.array([[3, 7, 1, 9, 4], [5, 2, 8, 0, 0]], jnp.int32)
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    durations = jnp.array([[2, 3, 1, 4, 2], [3, 0, 5, 0, 0]], jnp.int32)
    pitch = jnp.array([[0.5, -1.0, 0.2, 1.5, -0.3], [0.0, 0.8, -1.2, 0.0, 0.0]], jnp.float32)
    energy = jnp.array([[-0.5, 0.3, 1.0, -1.5, 0.6], [1.2, -0.4, 0.1, 0.0, 0.0]], jnp.float32)
    return ph, mask, durations, pitch, energy


@pytest.mark.parametrize("teacher", [True, False], ids=["teacher_forced_with_postnet", "inferred"])
def test_padding_invariance_in_eval_mode(teacher):
    # The inferred run uses a k=3 second FFN convolution, so the FFN's inner zeroing matters too.
    model = _model(dataclasses.replace(TINY, postnet=teacher, conv_kernels=(9, 1) if teacher else (9, 3)))
    model.duration_predictor.linear.bias[...] = jnp.array([1.2])  # nonzero predicted durations
    ph, mask, durations, pitch, energy = _utterances()
    extra = 4
    ph_long = jnp.concatenate([ph, jnp.full((2, extra), 11, jnp.int32)], axis=1)  # garbage ids at padding
    mask_long = jnp.concatenate([mask, jnp.zeros((2, extra), bool)], axis=1)

    def pad(x):
        return jnp.concatenate([x, jnp.full((2, extra), 3, x.dtype)], axis=1)

    kw = dict(durations=durations, pitch=pitch, energy=energy) if teacher else {}
    # Teacher forced, the first row fills all 12 short frames exactly: only the long run has padding frames
    # next to its last valid frame (what a leak through the postnet's convolutions would change).
    frames = 12 if teacher else 16
    kw_long = dict(durations=pad(durations), pitch=pad(pitch), energy=pad(energy)) if teacher else {}
    short = _forward(model, ph, mask, max_frames=frames, **kw)
    long = _forward(model, ph_long, mask_long, max_frames=24, **kw_long)  # more padding phonemes and frames
    np.testing.assert_array_equal(np.asarray(long["durations"][:, :5]), np.asarray(short["durations"]))
    assert int(long["durations"][:, 5:].sum()) == 0
    for key in ("log_duration", "pitch", "energy"):
        np.testing.assert_allclose(long[key][:, :5], short[key], atol=1e-5, err_msg=key)
    fm = np.asarray(short["frame_mask"])
    np.testing.assert_array_equal(np.asarray(long["frame_mask"][:, :frames]), fm)
    assert fm.sum() > 0 and not np.asarray(long["frame_mask"][:, frames:]).any()
    for key in ("mel", "mel_postnet") if teacher else ("mel",):
        np.testing.assert_allclose(long[key][:, :frames], short[key], atol=1e-4, err_msg=key)
        assert not np.asarray(short[key])[~fm].any()


def test_teacher_forcing_uses_the_given_durations():
    model = _model()
    ph, mask, durations, pitch, energy = _utterances()
    out = _forward(model, ph, mask, durations, pitch, energy, max_frames=16)
    np.testing.assert_array_equal(np.asarray(out["durations"]), np.asarray(durations))
    assert np.asarray(out["frame_mask"]).sum(axis=1).tolist() == [12, 8]
    assert out["mel"].shape == (2, 16, TINY.n_mels) and "mel_postnet" not in out
    # Durations given at padded phonemes are ignored.
    noisy = durations.at[1, 3:].set(7)
    again = _forward(model, ph, mask, noisy, pitch, energy, max_frames=16)
    np.testing.assert_array_equal(np.asarray(again["durations"]), np.asarray(durations))
    np.testing.assert_allclose(again["mel"], out["mel"], atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1.7, 0.4])
def test_inference_duration_rounding_matches_numpy(scale):
    model = _model(seed=3)
    model.duration_predictor.linear.bias[...] = jnp.array([1.3])
    ph, mask, *_ = _utterances()
    out = _forward(model, ph, mask, max_frames=64, duration_scale=scale)
    log_d = np.asarray(out["log_duration"], np.float64)
    expected = np.clip(np.round(np.exp(log_d) - 1) * scale, 0, None).astype(np.int32) * np.asarray(mask)
    np.testing.assert_array_equal(np.asarray(out["durations"]), expected)
    assert expected.sum() > 0
    assert np.asarray(out["frame_mask"]).sum(axis=1).tolist() == np.minimum(expected.sum(axis=1), 64).tolist()


def test_pitch_scale_and_energy_shift_apply_to_predictions_only():
    model = _model(seed=4)
    ph, mask, *_ = _utterances()
    base = _forward(model, ph, mask, max_frames=16)
    scaled = _forward(model, ph, mask, max_frames=16, pitch_scale=2.0)
    np.testing.assert_allclose(scaled["pitch"], 2.0 * base["pitch"], atol=1e-6)
    shifted = _forward(model, ph, mask, max_frames=16, energy_shift=0.5)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(shifted["energy"])[m], np.asarray(base["energy"])[m] + 0.5, atol=1e-5)
    assert not np.asarray(shifted["energy"])[~m].any()


def test_dropout_follows_train_and_eval_mode():
    model = _model(seed=5, train=True)
    ph, mask, durations, pitch, energy = _utterances()
    args = (ph, mask, durations, pitch, energy)
    a, b = _forward(model, *args, max_frames=16)["mel"], _forward(model, *args, max_frames=16)["mel"]
    assert not np.allclose(a, b)
    model.eval()
    c, d = _forward(model, *args, max_frames=16)["mel"], _forward(model, *args, max_frames=16)["mel"]
    np.testing.assert_array_equal(np.asarray(c), np.asarray(d))


def test_loss_matches_numpy():
    rng = np.random.default_rng(7)
    b, p, t, m = 2, 5, 9, 4
    pm = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    fm = np.array([[1] * 9, [1] * 6 + [0] * 3], bool)
    outputs = {
        "mel": rng.normal(size=(b, t, m)).astype(np.float32),
        "mel_postnet": rng.normal(size=(b, t, m)).astype(np.float32),
        "log_duration": rng.normal(size=(b, p)).astype(np.float32),
        "pitch": rng.normal(size=(b, p)).astype(np.float32),
        "energy": rng.normal(size=(b, p)).astype(np.float32),
        "phoneme_mask": pm,
        "frame_mask": fm,
    }
    targets = {
        "mel": rng.normal(size=(b, t, m)).astype(np.float32),
        "durations": rng.integers(0, 6, size=(b, p)).astype(np.int32),
        "pitch": rng.normal(size=(b, p)).astype(np.float32),
        "energy": rng.normal(size=(b, p)).astype(np.float32),
    }
    total, metrics = fastspeech2_loss(jax.tree.map(jnp.asarray, outputs), jax.tree.map(jnp.asarray, targets))
    ref = {
        "mel_loss": np.abs(outputs["mel"] - targets["mel"])[fm].mean(),
        "postnet_mel_loss": np.abs(outputs["mel_postnet"] - targets["mel"])[fm].mean(),
        "duration_loss": ((outputs["log_duration"] - np.log(targets["durations"] + 1.0)) ** 2)[pm].mean(),
        "pitch_loss": ((outputs["pitch"] - targets["pitch"]) ** 2)[pm].mean(),
        "energy_loss": ((outputs["energy"] - targets["energy"]) ** 2)[pm].mean(),
    }
    for key, value in ref.items():
        np.testing.assert_allclose(float(metrics[key]), value, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(float(total), sum(ref.values()), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), float(total), rtol=0)
    # Explicit target masks override the outputs' ones; without mel_postnet that term is absent.
    no_post = {k: v for k, v in outputs.items() if k != "mel_postnet"}
    fm2 = fm.copy()
    fm2[0, 5:] = False
    _, m2 = fastspeech2_loss(no_post, {**targets, "frame_mask": fm2})
    assert "postnet_mel_loss" not in m2
    np.testing.assert_allclose(float(m2["mel_loss"]), np.abs(outputs["mel"] - targets["mel"])[fm2].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="mel"):
        fastspeech2_loss(outputs, {**targets, "mel": targets["mel"][:, :5]})


def _train_step(max_frames):
    @nnx.jit
    def step(model, optimizer, batch):
        ph, mask, durations, pitch, energy, mel = batch

        def loss_fn(model):
            out = model(ph, mask, max_frames=max_frames, durations=durations, pitch=pitch, energy=energy)
            targets = {"mel": mel, "durations": durations, "pitch": pitch, "energy": energy}
            return fastspeech2_loss(out, targets)

        (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss

    return step


def test_overfits_two_utterances():
    config = dataclasses.replace(TINY, dropout=0.1, variance_dropout=0.1)
    model = _model(config, seed=11, train=True)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    ph, mask, durations, pitch, energy = _utterances()
    max_frames = 12
    # A smooth target mel: each phoneme's frames follow its own ramp over the bins.
    frames, fmask = length_regulate(jax.random.normal(jax.random.key(0), (2, 5, config.n_mels)), durations, max_frames)
    mel = frames + 0.1 * jnp.arange(max_frames, dtype=jnp.float32)[None, :, None]
    mel = mel * fmask[..., None]
    step = _train_step(max_frames)
    batch = (ph, mask, durations, pitch, energy, mel)
    losses = [float(step(model, optimizer, batch)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_forward_under_nnx_jit_matches_eager():
    model = _model(seed=2)
    ph, mask, durations, pitch, energy = _utterances()
    jitted = _forward(model, ph, mask, durations, max_frames=16)
    eager = model(ph, mask, max_frames=16, durations=durations)
    for key in ("mel", "log_duration", "pitch", "energy"):
        np.testing.assert_allclose(jitted[key], eager[key], atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(np.asarray(jitted["frame_mask"]), np.asarray(eager["frame_mask"]))
    # Inference (predicted durations) also traces: durations are data-dependent, the frame count is static.
    inferred = _forward(model, ph, mask, max_frames=16)
    assert inferred["mel"].shape == (2, 16, TINY.n_mels)


def _independent_count(c: FastSpeech2Config) -> int:
    """Parameter count of ming024's architecture from its layer shapes (weights + biases)."""
    d = c.d_model

    def conv(cin, cout, k):
        return k * cin * cout + cout

    def linear(cin, cout):
        return cin * cout + cout

    def norm(n):
        return 2 * n

    fft = 4 * linear(d, d) + norm(d) + conv(d, c.conv_filter, c.conv_kernels[0])
    fft += conv(c.conv_filter, d, c.conv_kernels[1]) + norm(d)
    f = c.variance_filter
    predictor = conv(d, f, c.variance_kernel) + norm(f) + conv(f, f, c.variance_kernel) + norm(f) + linear(f, 1)
    total = c.vocab_size * d + (c.encoder_layers + c.decoder_layers) * fft + 3 * predictor
    total += 2 * c.n_bins * d + linear(d, c.n_mels)
    if c.postnet:
        widths = [c.n_mels, 512, 512, 512, 512, c.n_mels]
        total += sum(conv(a, b, 5) + norm(b) for a, b in zip(widths[:-1], widths[1:]))
    return total


def test_paper_preset_parameter_count():
    # jax.eval_shape: the count without allocating or initializing 35M parameters.
    config = dataclasses.replace(PAPER, vocab_size=151)
    abstract = nnx.eval_shape(lambda: FastSpeech2(config, rngs=nnx.Rngs(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    expected = _independent_count(config)
    assert abs(count - expected) <= 0.1 * expected, (count, expected)
    assert 30e6 < count < 40e6  # ming024's FastSpeech 2 is about 35M parameters
    cpu = nnx.eval_shape(lambda: FastSpeech2(dataclasses.replace(CPU, vocab_size=151), rngs=nnx.Rngs(0)))
    cpu_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(cpu, nnx.Param)))
    assert cpu_count == _independent_count(dataclasses.replace(CPU, vocab_size=151))
