"""ResGrad metrics: MCD, DTW, log-mel L1, global variance, F0 RMSE and DNSMOS, against loops,
hand-computed cases and synthetic signals."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from frugal.scripts.systems.resgrad import metrics as M

SR = 22050


def test_mel_cepstrum_is_the_orthonormal_dct_ii():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 80))
    c = M.mel_cepstrum(x, n_coeffs=13)
    assert c.shape == (5, 13)
    n = 80
    for t in range(5):
        for d in (0, 1, 7, 12):
            scale = math.sqrt(1 / n) if d == 0 else math.sqrt(2 / n)
            ref = scale * sum(x[t, m] * math.cos(math.pi * d * (2 * m + 1) / (2 * n)) for m in range(n))
            assert c[t, d] == pytest.approx(ref, abs=1e-10)
    with pytest.raises(ValueError, match="n_coeffs"):
        M.mel_cepstrum(x, n_coeffs=81)


def _cepstral_offset(d, delta, n=80):
    """Log-mel frame whose orthonormal DCT-II is delta at coefficient d and 0 elsewhere."""
    m = np.arange(n)
    scale = math.sqrt(1 / n) if d == 0 else math.sqrt(2 / n)
    return delta * scale * np.cos(np.pi * d * (2 * m + 1) / (2 * n))


def test_mcd_hand_cases():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((30, 80))
    assert M.mcd(ref, ref) == 0.0
    # a level change only moves c0, which MCD leaves out
    assert M.mcd(ref, ref + 3.0) == pytest.approx(0.0, abs=1e-9)
    # a change of 0.5 in c3 alone: (10 / ln 10) * sqrt(2 * 0.25)
    gen = ref + _cepstral_offset(3, 0.5)
    assert M.mcd(ref, gen) == pytest.approx(10 / math.log(10) * math.sqrt(0.5), rel=1e-9)
    # coefficient 13 lies outside c1..c12
    assert M.mcd(ref, ref + _cepstral_offset(13, 2.0)) == pytest.approx(0.0, abs=1e-9)
    assert M.mcd(ref, ref + _cepstral_offset(13, 2.0), n_coeffs=14) > 1.0


def test_mcd_dtw_undoes_a_time_stretch():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((40, 80))
    stretched = np.repeat(ref, 2, axis=0)[:70]
    with pytest.raises(ValueError, match=r"35 frames.*70"):
        M.mcd(ref[:35], stretched)
    assert M.mcd(ref[:35], stretched, align="dtw") == pytest.approx(0.0, abs=1e-9)
    assert M.mcd(ref[:35], stretched[:35]) > 1.0
    with pytest.raises(ValueError, match="align"):
        M.mcd(ref, ref, align="soft")


def test_mcd_refuses_bad_input():
    x = np.zeros((10, 80))
    with pytest.raises(ValueError, match="gen_log_mel.*80"):
        M.mcd(x, np.zeros((10, 79)))
    with pytest.raises(ValueError, match="ref_log_mel.*2-D"):
        M.mcd(np.zeros(80), x)
    with pytest.raises(ValueError, match="ref_log_mel.*empty"):
        M.mcd(np.zeros((0, 80)), x)
    with pytest.raises(ValueError, match="non-finite"):
        M.mcd(x, np.full((10, 80), np.nan))


def _loop_dtw(a, b):
    ta, tb = len(a), len(b)
    cost = [[math.dist(a[i], b[j]) for j in range(tb)] for i in range(ta)]
    acc = [[math.inf] * tb for _ in range(ta)]
    for i in range(ta):
        for j in range(tb):
            if i == 0 and j == 0:
                acc[i][j] = cost[0][0]
                continue
            best = math.inf
            if i > 0 and j > 0:
                best = min(best, acc[i - 1][j - 1])
            if i > 0:
                best = min(best, acc[i - 1][j])
            if j > 0:
                best = min(best, acc[i][j - 1])
            acc[i][j] = cost[i][j] + best
    i, j, path = ta - 1, tb - 1, [(ta - 1, tb - 1)]
    while (i, j) != (0, 0):
        options = []
        if i > 0 and j > 0:
            options.append((acc[i - 1][j - 1], 0, (i - 1, j - 1)))
        if i > 0:
            options.append((acc[i - 1][j], 1, (i - 1, j)))
        if j > 0:
            options.append((acc[i][j - 1], 2, (i, j - 1)))
        i, j = min(options)[2]
        path.append((i, j))
    return acc[-1][-1], path[::-1]


@pytest.mark.parametrize("ta,tb,d", [(1, 1, 3), (1, 6, 2), (7, 1, 2), (8, 11, 3), (15, 12, 5), (20, 20, 1)])
def test_dtw_path_matches_a_double_loop(ta, tb, d):
    rng = np.random.default_rng(ta * 100 + tb)
    a, b = rng.standard_normal((ta, d)), rng.standard_normal((tb, d))
    ia, ib = M.dtw_path(a, b)
    total, path = _loop_dtw(a.tolist(), b.tolist())
    assert list(zip(ia.tolist(), ib.tolist())) == path
    assert np.linalg.norm(a[ia] - b[ib], axis=1).sum() == pytest.approx(total, rel=1e-12)


def test_dtw_path_is_fast_and_refuses_mismatched_dims():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((600, 12)), rng.standard_normal((600, 12))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        ia, ib = M.dtw_path(a, b)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.2
    assert ia[0] == ib[0] == 0 and ia[-1] == ib[-1] == 599
    steps = np.stack([np.diff(ia), np.diff(ib)], axis=1)
    assert set(map(tuple, steps.tolist())) <= {(1, 0), (0, 1), (1, 1)}
    with pytest.raises(ValueError, match="b has 3 features"):
        M.dtw_path(np.zeros((4, 2)), np.zeros((4, 3)))


def test_log_mel_l1():
    rng = np.random.default_rng(0)
    ref, gen = rng.standard_normal((6, 80)), rng.standard_normal((6, 80))
    assert M.log_mel_l1(ref, gen) == pytest.approx(np.abs(ref - gen).mean())
    mask = np.array([True, False, True, True, False, False])
    assert M.log_mel_l1(ref, gen, mask) == pytest.approx(np.abs(ref - gen)[[0, 2, 3]].mean())
    with pytest.raises(ValueError, match="mask"):
        M.log_mel_l1(ref, gen, np.ones(5, bool))
    with pytest.raises(ValueError, match="mask selects no frame"):
        M.log_mel_l1(ref, gen, np.zeros(6, bool))
    with pytest.raises(ValueError, match="gen has shape"):
        M.log_mel_l1(ref, gen[:5])


def test_global_variance_and_ratio():
    rng = np.random.default_rng(0)
    refs = [rng.standard_normal((n, 80)) * np.linspace(0.5, 2.0, 80) for n in (30, 50, 7)]
    gv = M.global_variance(refs)
    frames = [row for r in refs for row in r]
    for k in (0, 40, 79):
        column = [row[k] for row in frames]
        mean = sum(column) / len(column)
        assert gv[k] == pytest.approx(sum((v - mean) ** 2 for v in column) / len(column))
    assert np.allclose(M.gv_ratio(refs, refs), 1.0)
    assert M.gv_ratio_db(M.gv_ratio(refs, refs)) == pytest.approx(0.0, abs=1e-12)
    # over-smoothing: a 5-frame moving average along time lowers the variance of every bin
    kernel = np.ones(5) / 5
    smooth = [np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, r) for r in refs]
    ratio = M.gv_ratio(refs, smooth)
    assert ratio.shape == (80,) and np.all(ratio < 1.0)
    assert M.gv_ratio_db(ratio) < -3.0
    assert M.gv_ratio_db(np.full(80, 0.5)) == pytest.approx(10 * math.log10(0.5))
    with pytest.raises(ValueError, match="gen_list"):
        M.gv_ratio(refs, [np.zeros((4, 79))])
    with pytest.raises(ValueError, match="log_mels is empty"):
        M.global_variance([])
    with pytest.raises(ValueError, match="ratio must be positive"):
        M.gv_ratio_db(np.zeros(80))


def test_log_f0_rmse_hand_case():
    ref = np.array([100.0, 200.0, 0.0, 100.0, 0.0])
    gen = np.array([200.0, 200.0, 100.0, 0.0, 0.0])
    rmse, vuv = M.log_f0_rmse(ref, gen)
    assert rmse == pytest.approx(math.sqrt((1200.0**2 + 0.0) / 2))
    assert vuv == pytest.approx(2 / 5)
    # along a path (0, 0), (1, 1), (1, 2): in tune, 50 cents sharp, then voiced against unvoiced
    rmse, vuv = M.log_f0_rmse([100.0, 150.0], [100.0, 150.0 * 2 ** (50 / 1200), 0.0], path=([0, 1, 1], [0, 1, 2]))
    assert rmse == pytest.approx(math.sqrt(50.0**2 / 2))
    assert vuv == pytest.approx(1 / 3)
    assert math.isnan(M.log_f0_rmse([0.0, 100.0], [100.0, 0.0])[0])
    with pytest.raises(ValueError, match="ref_f0 has 2 frames and gen_f0 has 3"):
        M.log_f0_rmse([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="path indexes outside"):
        M.log_f0_rmse([1.0, 2.0], [1.0, 2.0], path=([0, 2], [0, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        M.log_f0_rmse([-1.0], [1.0])


def _speech_like(seconds, seed=0):
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 140 + 20 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    amps = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.2, 0.1]
    return 0.1 * envelope * sum(a / (k + 1) * np.sin((k + 1) * phase) for k, a in enumerate(amps))


def test_dnsmos_drops_with_noise():
    clean = _speech_like(3.0)
    noisy = clean + 0.02 * np.random.default_rng(0).standard_normal(clean.size)
    s_clean, s_noisy = M.dnsmos(clean, SR), M.dnsmos(noisy, SR)
    assert set(s_clean) == {"sig", "bak", "ovr"}
    for scores in (s_clean, s_noisy):
        assert all(1.0 <= v <= 5.0 for v in scores.values()), scores
    assert s_noisy["bak"] < s_clean["bak"] - 0.3
    assert s_noisy["ovr"] < s_clean["ovr"] - 0.2
    # a 16 kHz clip is scored without resampling; repeating a clip to fill the window is the
    # procedure for short clips, so a clip and its exact repetition score alike
    x16 = _speech_like(2.0)[: 2 * 16000]
    assert M.dnsmos(x16, 16000) == pytest.approx(M.dnsmos(np.tile(x16, 4), 16000), abs=1e-6)
    with pytest.raises(ValueError, match="sample_rate"):
        M.dnsmos(clean, 0)
    with pytest.raises(ValueError, match="audio"):
        M.dnsmos(np.zeros((2, 100)), SR)
