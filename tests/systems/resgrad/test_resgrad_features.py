"""ResGrad audio features: Slaney mel filters, STFT framing, log mel, energy, YIN pitch,
interpolation / phoneme averages and Griffin-Lim, against loops, hand values and synthetic signals."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from frugal.scripts.systems.resgrad import features as F

SR = 22050


def _harmonic(f0, amps, n, phase_offsets=True):
    """Sum of harmonics k * f0 (amplitudes `amps`) over n samples; f0 may be an array (a glide)."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return 0.1 * sum(a * np.sin((k + 1) * phase + (k if phase_offsets else 0)) for k, a in enumerate(amps))


# --- mel filters -----------------------------------------------------------------------------------


def _slaney_hz_to_mel(f):
    return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) / (math.log(6.4) / 27)


def _slaney_mel_to_hz(m):
    return m * (200 / 3) if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)


def _loop_mel_filters(sr, n_fft, n_mels, fmin, fmax):
    lo, hi = _slaney_hz_to_mel(fmin), _slaney_hz_to_mel(fmax)
    edges = [_slaney_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        f_lo, f_c, f_hi = edges[i], edges[i + 1], edges[i + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if f_lo < f <= f_c:
                w = (f - f_lo) / (f_c - f_lo)
            elif f_c < f < f_hi:
                w = (f_hi - f) / (f_hi - f_c)
            else:
                w = 0.0
            out[i, k] = w * 2 / (f_hi - f_lo)
    return out, edges


def test_mel_filters_match_a_loop_implementation():
    w = F.mel_filters()
    assert w.shape == (80, 513) and w.dtype == np.float32
    ref, _ = _loop_mel_filters(SR, 1024, 80, 0.0, 8000.0)
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-9)
    w2 = F.mel_filters(16000, 512, 40, 50.0, 7000.0)
    ref2, _ = _loop_mel_filters(16000, 512, 40, 50.0, 7000.0)
    np.testing.assert_allclose(w2, ref2, rtol=1e-5, atol=1e-9)


def test_mel_filters_hand_values():
    # hz_to_mel(8000) = 15 + 27 ln(8) / ln(6.4) = 45.24564; mel step = 45.24564 / 81; filter 0 spans
    # 0 .. 74.478 Hz with its centre at 37.239 Hz; bin k sits at k * 22050 / 1024 = k * 21.533 Hz.
    w = F.mel_filters()
    # bin 1 (21.533 Hz) on the rising side: 21.533 / 37.239 * 2 / 74.478
    assert w[0, 1] == pytest.approx(0.0155277, rel=1e-5)
    # bin 2 (43.066 Hz) on the falling side: (74.478 - 43.066) / 37.239 * 2 / 74.478
    assert w[0, 2] == pytest.approx(0.0226514, rel=1e-5)
    # filter 29 (log part: 1085.93 / 1128.45 / 1172.63 Hz), bin 52 (1119.73 Hz), rising side
    assert w[29, 52] == pytest.approx(0.0183383, rel=1e-5)
    # filter 79 (7408.54 / 7698.59 / 8000 Hz), bin 357 (7687.35 Hz), rising side
    assert w[79, 357] == pytest.approx(0.00325044, rel=1e-5)
    assert F.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert F.hz_to_mel(6400.0) == pytest.approx(42.0)
    assert F.mel_to_hz(42.0) == pytest.approx(6400.0)


def test_mel_filters_peaks_and_area_on_a_fine_grid():
    # With 2**16 FFT bins the triangles are densely sampled: each peaks at its centre frequency with
    # height 2 / (f_hi - f_lo), i.e. unit area in Hz.
    n_fft = 1 << 16
    w = F.mel_filters(SR, n_fft, 80, 0.0, 8000.0).astype(np.float64)
    _, edges = _loop_mel_filters(SR, 8, 80, 0.0, 8000.0)
    bin_hz = SR / n_fft
    for i in range(80):
        f_lo, f_c, f_hi = edges[i], edges[i + 1], edges[i + 2]
        assert abs(np.argmax(w[i]) * bin_hz - f_c) <= bin_hz
        # the sampled peak misses the apex by at most one bin of the steeper side
        slack = bin_hz / min(f_c - f_lo, f_hi - f_c)
        assert 2 / (f_hi - f_lo) * (1 - slack) <= w[i].max() <= 2 / (f_hi - f_lo) * (1 + 1e-6)
        assert w[i].sum() * bin_hz == pytest.approx(1.0, rel=2e-3)


def test_mel_filters_refuse_bad_ranges():
    with pytest.raises(ValueError, match="fmax"):
        F.mel_filters(fmax=20000.0)
    with pytest.raises(ValueError, match="n_mels"):
        F.mel_filters(n_mels=0)


# --- STFT, log mel, energy ---------------------------------------------------------------------------


def test_stft_magnitude_matches_a_direct_dft():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(2048)
    mag = F.stft_magnitude(x)
    assert mag.shape == (8, 513)
    padded = np.concatenate([x[384:0:-1], x, x[-2:-386:-1]])
    assert padded.size == 2048 + 768
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / 1024) for n in range(1024)])
    for i in (0, 3, 7):
        frame = padded[i * 256 : i * 256 + 1024] * window
        for k in (0, 5, 100, 512):
            dft = sum(frame[n] * np.exp(-2j * np.pi * k * n / 1024) for n in range(0, 1024))
            assert mag[i, k] == pytest.approx(abs(dft), rel=1e-9, abs=1e-9)


def test_istft_inverts_stft():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(256 * 40)
    y = F.istft(F.stft(x))
    assert y.shape == x.shape
    np.testing.assert_allclose(y[512:-512], x[512:-512], atol=1e-9)


@pytest.mark.parametrize("n_frames", [1, 2, 37, 100])
def test_log_mel_frames_are_length_over_hop(n_frames):
    rng = np.random.default_rng(n_frames)
    x = 0.1 * rng.standard_normal(256 * n_frames).astype(np.float32)
    m = F.log_mel(x)
    assert m.shape == (n_frames, 80) and m.dtype == np.float32
    e = F.energy(x)
    assert e.shape == (n_frames,) and e.dtype == np.float32
    assert F.pitch(x).shape == (n_frames,)


def test_log_mel_and_energy_definitions():
    x = _harmonic(200.0, [1, 0.5, 0.25], 256 * 20)
    mag = F.stft_magnitude(x)
    expected = np.log(np.maximum(mag @ F.mel_filters().astype(np.float64).T, 1e-5))
    np.testing.assert_allclose(F.log_mel(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(F.energy(x), np.sqrt((mag**2).sum(axis=1)), rtol=1e-5)
    silent = F.log_mel(np.zeros(256 * 4))
    np.testing.assert_allclose(silent, np.log(1e-5), rtol=1e-6)


def test_front_end_refuses_bad_input():
    x = np.zeros(1024)
    for fn in (F.log_mel, F.energy, F.pitch):
        with pytest.raises(ValueError, match=r"sample_rate.*22050"):
            fn(x, sample_rate=16000)
        with pytest.raises(ValueError, match="1-D"):
            fn(np.zeros((2, 1024)))
        with pytest.raises(ValueError, match="empty"):
            fn(np.zeros(0))
        with pytest.raises(ValueError, match="non-finite"):
            fn(np.array([0.0] * 1000 + [np.nan]))


# --- pitch -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [90.0, 120.0, 220.0])
def test_pitch_of_pure_and_harmonic_tones(f0):
    n = SR
    for amps in ([1.0], [1.0, 0.8, 0.6, 0.4, 0.3]):
        p = F.pitch(_harmonic(f0, amps, n))
        inner = p[4:-4]
        assert np.all(inner > 0)
        np.testing.assert_allclose(inner, f0, rtol=0.01)


def test_pitch_has_no_octave_error_when_the_second_harmonic_dominates():
    p = F.pitch(_harmonic(110.0, [0.3, 1.0, 0.6, 0.4, 0.2], SR))
    np.testing.assert_allclose(p[4:-4], 110.0, rtol=0.01)


def test_pitch_follows_a_glide():
    n = 2 * SR
    f_true = np.linspace(100.0, 300.0, n)
    p = F.pitch(_harmonic(f_true, [1.0, 0.5, 0.3], n))
    centres = np.arange(p.size) * 256 + 128
    inner = slice(4, -4)
    np.testing.assert_allclose(p[inner], f_true[centres[inner]], rtol=0.01)


def test_pitch_of_silence_and_white_noise_is_unvoiced():
    assert np.all(F.pitch(np.zeros(SR)) == 0)
    assert np.all(F.pitch(1e-5 * np.ones(SR)) == 0)
    noise = 0.3 * np.random.default_rng(0).standard_normal(SR)
    assert np.mean(F.pitch(noise) > 0) < 0.02


def test_pitch_voicing_follows_a_gap():
    tone = _harmonic(150.0, [1.0, 0.5], 256 * 40)
    x = np.concatenate([tone, np.zeros(256 * 40), tone])
    p = F.pitch(x)
    assert np.all(p[4:36] > 0) and np.all(p[46:74] == 0) and np.all(p[84:116] > 0)


def test_pitch_is_fast_enough_for_a_corpus():
    # 1,000 utterances of 500 frames must take well under a minute: 5 take under 0.25 s (best of 3).
    x = 0.1 * np.random.default_rng(0).standard_normal(500 * 256)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(5):
            F.pitch(x)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.25


def test_pitch_refuses_bad_settings():
    with pytest.raises(ValueError, match="fmin"):
        F.pitch(np.zeros(SR), fmin=500.0, fmax=400.0)
    with pytest.raises(ValueError, match="threshold"):
        F.pitch(np.zeros(SR), threshold=1.5)


# --- interpolation and phoneme averages --------------------------------------------------------------


def _loop_interpolate(f0):
    f0 = list(map(float, f0))
    voiced = [i for i, v in enumerate(f0) if v > 0]
    if not voiced:
        return [0.0] * len(f0)
    out = []
    for i, v in enumerate(f0):
        if v > 0:
            out.append(v)
        elif i < voiced[0]:
            out.append(f0[voiced[0]])
        elif i > voiced[-1]:
            out.append(f0[voiced[-1]])
        else:
            a = max(j for j in voiced if j < i)
            b = min(j for j in voiced if j > i)
            out.append(f0[a] + (f0[b] - f0[a]) * (i - a) / (b - a))
    return out


def test_interpolate_unvoiced_matches_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        f0 = rng.uniform(80, 300, 30) * (rng.random(30) < 0.6)
        np.testing.assert_allclose(F.interpolate_unvoiced(f0), _loop_interpolate(f0), rtol=1e-6)
    assert np.array_equal(F.interpolate_unvoiced(np.zeros(7)), np.zeros(7))
    expected = [100, 100, 133.333333, 166.666667, 200, 200]
    np.testing.assert_allclose(F.interpolate_unvoiced([0, 100, 0, 0, 200, 0]), expected)
    with pytest.raises(ValueError, match="f0"):
        F.interpolate_unvoiced(np.zeros((2, 3)))


def test_phoneme_average_matches_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.integers(0, 5, 12)
        d[0] += 1
        v = rng.standard_normal(int(d.sum()))
        expected, pos = [], 0
        for n in d:
            expected.append(float(np.mean(v[pos : pos + n])) if n > 0 else 0.0)
            pos += n
        np.testing.assert_allclose(F.phoneme_average(v, d), expected, rtol=1e-5, atol=1e-6)
    assert F.phoneme_average([1.0, 3.0, 5.0], [0, 2, 0, 1]).tolist() == [0.0, 2.0, 0.0, 5.0]
    with pytest.raises(ValueError, match="durations must sum"):
        F.phoneme_average([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        F.phoneme_average([1.0, 2.0], [3, -1])


# --- Griffin-Lim -------------------------------------------------------------------------------------


def test_griffin_lim_reproduces_the_log_mel():
    n = 256 * 100
    f_true = 150.0 + 30.0 * np.sin(2 * np.pi * 2.0 * np.arange(n) / SR)
    x = _harmonic(f_true, [1.0, 0.6, 0.4, 0.3, 0.2, 0.1], n)
    m = F.log_mel(x)
    speech = m.max(axis=1) > np.log(1e-2)
    assert speech.sum() > 80

    def error(n_iter):
        y = F.griffin_lim(m, n_iter=n_iter, seed=0)
        assert y.shape == (n,) and y.dtype == np.float32
        return np.abs(F.log_mel(y) - m)[speech].mean()

    e32, e0 = error(32), error(0)
    assert e32 < 0.5
    assert e32 < e0
    with pytest.raises(ValueError, match="log_mel"):
        F.griffin_lim(np.zeros((10, 81)))
