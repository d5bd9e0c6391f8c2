"""Objective measures of generated speech for ResGrad (arXiv 2212.14518), in NumPy.

- `mel_cepstrum`, `mcd`: mel-cepstral distortion in dB between two log mels (optionally after DTW);
- `dtw_path`: classic dynamic time warping with a Euclidean frame cost;
- `log_mel_l1`, `global_variance`, `gv_ratio`, `gv_ratio_db`: the mel L1 error and the global variance
  (Toda & Tokuda 2007, IEICE Trans. Inf. & Syst. E90-D(5)) whose loss marks over-smoothed output;
- `log_f0_rmse`: F0 error in cents over frames voiced in both tracks, and the voicing error rate;
- `dnsmos`: DNSMOS P.835 (Reddy et al. 2022, arXiv 2110.01763) SIG / BAK / OVR from the ONNX model
  shipped in the `speechmos` wheel, run with onnxruntime (the `tts` extra).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.signal

__all__ = [
    "DNSMOS_RATE",
    "DNSMOS_WINDOW",
    "dnsmos",
    "dnsmos_model_path",
    "dtw_path",
    "global_variance",
    "gv_ratio",
    "gv_ratio_db",
    "log_f0_rmse",
    "log_mel_l1",
    "mcd",
    "mel_cepstrum",
]

_MCD_SCALE = 10.0 / math.log(10.0)


def _matrix(x, name: str, dim: int | None = None) -> np.ndarray:
    m = np.asarray(x)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [frames, features], got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {m.shape}); it needs at least one frame and one feature")
    if dim is not None and m.shape[1] != dim:
        raise ValueError(f"{name} has {m.shape[1]} features per frame; it must have {dim} to match")
    if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
        raise ValueError(f"{name} must be real numbers, got dtype {m.dtype}")
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} holds non-finite values; all values must be finite")
    return m


def _vector(x, name: str) -> np.ndarray:
    v = np.asarray(x)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise ValueError(f"{name} must be real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} holds non-finite values; all values must be finite")
    return v


def mel_cepstrum(log_mel, n_coeffs: int = 13) -> np.ndarray:
    """Mel cepstrum [T, n_coeffs]: type-II orthonormal DCT of each frame's log mel over the mel axis,
    c_d = s_d sum_m log_mel[m] cos(pi d (2m + 1) / (2M)), s_0 = sqrt(1/M), s_d = sqrt(2/M)."""
    m = _matrix(log_mel, "log_mel")
    if isinstance(n_coeffs, bool) or not isinstance(n_coeffs, (int, np.integer)) or not 2 <= n_coeffs <= m.shape[1]:
        raise ValueError(f"n_coeffs must be an integer in [2, {m.shape[1]}] (the mel bins), got {n_coeffs!r}")
    return scipy.fft.dct(m, type=2, norm="ortho", axis=1)[:, : int(n_coeffs)]


def mcd(ref_log_mel, gen_log_mel, *, align: str = "none", n_coeffs: int = 13) -> float:
    """Mel-cepstral distortion in dB, averaged over frames:
    MCD = (10 / ln 10) sqrt(2 sum_{d=1}^{n_coeffs-1} (c_d - c'_d)^2), c = `mel_cepstrum` of the
    reference, c' of the generated log mel, c_0 (the frame's level) left out (Kubichek 1993,
    IEEE PACRIM; computed here on the DCT of the 80-bin log mel rather than on SPTK mel-cepstra, so the
    values are comparable between our systems, not with other papers' MCD tables).
    align="none" pairs frame t with frame t (equal lengths required); align="dtw" averages over the
    frame pairs of `dtw_path` on the cepstra c_1..c_{n_coeffs-1}."""
    if align not in ("none", "dtw"):
        raise ValueError(f"align must be 'none' or 'dtw', got {align!r}")
    ref = _matrix(ref_log_mel, "ref_log_mel")
    gen = _matrix(gen_log_mel, "gen_log_mel", ref.shape[1])
    c_ref = mel_cepstrum(ref, n_coeffs)[:, 1:]
    c_gen = mel_cepstrum(gen, n_coeffs)[:, 1:]
    if align == "none":
        if ref.shape[0] != gen.shape[0]:
            raise ValueError(
                f"align='none' needs equal lengths: ref_log_mel has {ref.shape[0]} frames, "
                f"gen_log_mel has {gen.shape[0]}; use align='dtw'"
            )
        diff = c_ref - c_gen
    else:
        ia, ib = dtw_path(c_ref, c_gen)
        diff = c_ref[ia] - c_gen[ib]
    return float(np.mean(_MCD_SCALE * np.sqrt(2.0 * np.sum(diff**2, axis=1))))


def dtw_path(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic time warping of a [Ta, D] and b [Tb, D]: the monotone path from (0, 0) to (Ta-1, Tb-1)
    with steps (1, 0), (0, 1), (1, 1) that minimizes the summed Euclidean distance of the paired frames.
    Returns the index arrays (ia, ib), each of the path's length.

    Accumulated cost D[i, j] = C[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1]); each row is one
    vectorized scan: with m_j = min(D[i-1, j], D[i-1, j-1]) and S the prefix sums of C[i, :],
    D[i, j] = S[j] + min_{k<=j} (m_k - S[k-1]). Backtracking prefers the diagonal, then (i-1, j),
    then (i, j-1) on ties. O(Ta * Tb) memory and time."""
    a = _matrix(a, "a")
    b = _matrix(b, "b", a.shape[1])
    ta, tb = a.shape[0], b.shape[0]
    acc = np.empty((ta, tb))
    row_cost = np.linalg.norm(b - a[0], axis=1)
    acc[0] = np.cumsum(row_cost)
    for i in range(1, ta):
        row_cost = np.linalg.norm(b - a[i], axis=1)
        prev = acc[i - 1]
        best_prev = prev.copy()
        best_prev[1:] = np.minimum(prev[1:], prev[:-1])
        prefix = np.cumsum(row_cost)
        shifted = np.concatenate([[0.0], prefix[:-1]])
        acc[i] = prefix + np.minimum.accumulate(best_prev - shifted)
    i, j = ta - 1, tb - 1
    ia, ib = [i], [j]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        ia.append(i)
        ib.append(j)
    return np.array(ia[::-1]), np.array(ib[::-1])


def log_mel_l1(ref, gen, mask=None) -> float:
    """Mean absolute difference of two log mels [T, n_mels] (natural-log units), over all bins of the
    frames where `mask` [T] (booleans) is true, or of all frames without a mask."""
    r = _matrix(ref, "ref")
    g = _matrix(gen, "gen", r.shape[1])
    if g.shape != r.shape:
        raise ValueError(f"gen has shape {g.shape}; it must equal ref's shape {r.shape}")
    diff = np.abs(r - g)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (r.shape[0],) or m.dtype != np.bool_:
            raise ValueError(f"mask must be a boolean array of shape ({r.shape[0]},), got {m.dtype} {m.shape}")
        if not m.any():
            raise ValueError("mask selects no frame; it must select at least one")
        diff = diff[m]
    return float(diff.mean())


def _matrix_list(items, name: str, dim: int | None = None) -> list[np.ndarray]:
    if isinstance(items, np.ndarray) and items.ndim == 2:
        raise ValueError(f"{name} must be a list of [T, n_mels] arrays, not a single array")
    items = list(items)
    if not items:
        raise ValueError(f"{name} is empty; it must hold at least one [T, n_mels] array")
    out = []
    for k, x in enumerate(items):
        out.append(_matrix(x, f"{name}[{k}]", dim if dim is not None else (out[0].shape[1] if out else None)))
    return out


def global_variance(log_mels) -> np.ndarray:
    """Global variance [n_mels]: the variance of each mel bin over all frames of all utterances
    (concatenated; population variance)."""
    mats = _matrix_list(log_mels, "log_mels")
    return np.concatenate(mats, axis=0).var(axis=0)


def gv_ratio(ref_list, gen_list) -> np.ndarray:
    """Per-bin global-variance ratio GV(generated) / GV(reference) [n_mels]; over-smoothed output
    (the usual failure of L1/L2-trained acoustic models) has ratios below 1."""
    ref = _matrix_list(ref_list, "ref_list")
    gen = _matrix_list(gen_list, "gen_list", ref[0].shape[1])
    gv_ref = global_variance(ref)
    if np.any(gv_ref <= 0):
        raise ValueError("ref_list has a mel bin with zero variance; the ratio is undefined there")
    return global_variance(gen) / gv_ref


def gv_ratio_db(ratio) -> float:
    """Scalar summary of `gv_ratio`: the mean over bins of 10 log10(ratio), in dB. 0 dB means the
    generated mels vary as much as the reference; over-smoothing gives negative values (-3 dB = half
    the variance)."""
    r = _vector(ratio, "ratio")
    if np.any(r <= 0):
        raise ValueError("ratio must be positive in every bin")
    return float(np.mean(10.0 * np.log10(r)))


def log_f0_rmse(ref_f0, gen_f0, path=None) -> tuple[float, float]:
    """(RMSE of F0 in cents, voicing error rate) between two F0 tracks in Hz (0 = unvoiced).

    RMSE = sqrt(mean over frames voiced in both of (1200 log2(f_gen / f_ref))^2), in cents
    (100 cents = one semitone); NaN when no frame is voiced in both. Voicing error rate = the fraction
    of frame pairs whose voiced/unvoiced decisions differ. Frames are paired one to one (equal lengths
    required) or along `path` = (i_ref, i_gen), e.g. from `dtw_path` on the mels."""
    ref = _vector(ref_f0, "ref_f0")
    gen = _vector(gen_f0, "gen_f0")
    if np.any(ref < 0) or np.any(gen < 0):
        raise ValueError("ref_f0 and gen_f0 must be non-negative (Hz, 0 = unvoiced)")
    if path is None:
        if ref.size != gen.size:
            raise ValueError(
                f"ref_f0 has {ref.size} frames and gen_f0 has {gen.size}; without a path they must be equal"
            )
        r, g = ref, gen
    else:
        if len(path) != 2:
            raise ValueError("path must be a pair (i_ref, i_gen) of index arrays")
        ia, ib = (np.asarray(p) for p in path)
        if ia.ndim != 1 or ia.shape != ib.shape or ia.size == 0 or not np.issubdtype(ia.dtype, np.integer):
            raise ValueError("path must be two non-empty integer index arrays of equal length")
        if not np.issubdtype(ib.dtype, np.integer):
            raise ValueError("path must be two non-empty integer index arrays of equal length")
        if ia.min() < 0 or ia.max() >= ref.size or ib.min() < 0 or ib.max() >= gen.size:
            raise ValueError(f"path indexes outside ref_f0 ({ref.size} frames) or gen_f0 ({gen.size} frames)")
        r, g = ref[ia], gen[ib]
    vr, vg = r > 0, g > 0
    vuv = float(np.mean(vr != vg))
    both = vr & vg
    if not both.any():
        return float("nan"), vuv
    cents = 1200.0 * np.log2(g[both] / r[both])
    return float(np.sqrt(np.mean(cents**2))), vuv


# --- DNSMOS -------------------------------------------------------------------------------------------

DNSMOS_RATE = 16000
DNSMOS_WINDOW = int(9.01 * DNSMOS_RATE)  # 144,160 samples
# Polynomial fits (highest power first) from the model's raw outputs to P.835 MOS, DNSMOS (not
# personalized): https://github.com/microsoft/DNS-Challenge DNSMOS/dnsmos_local.py (MIT).
_DNSMOS_POLY = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovr": (-0.06766283, 1.11546468, 0.04602535),
}
_DNSMOS_SESSION = None


def dnsmos_model_path() -> Path:
    """Path of `dnsmos_models/sig_bak_ovr.onnx` in the installed `speechmos` wheel (located without
    importing speechmos)."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("DNSMOS needs the speechmos wheel's ONNX models; install frugal's `tts` extra")
    path = Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models" / "sig_bak_ovr.onnx"
    if not path.is_file():
        raise RuntimeError(f"DNSMOS model not found at {path}; reinstall frugal's `tts` extra")
    return path


def _dnsmos_session():
    global _DNSMOS_SESSION
    if _DNSMOS_SESSION is None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeError("DNSMOS needs onnxruntime; install frugal's `tts` extra") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        _DNSMOS_SESSION = ort.InferenceSession(
            str(dnsmos_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
    return _DNSMOS_SESSION


def dnsmos(audio, sample_rate: int) -> dict:
    """DNSMOS P.835 scores {"sig", "bak", "ovr"} (speech signal, background, overall quality; MOS
    scale 1-5) of one clip, following the DNS-Challenge `dnsmos_local.py` procedure: resample to
    16 kHz (scipy.signal.resample_poly), repeat a clip shorter than 9.01 s by doubling until it fills
    one window, cut 9.01 s windows (144,160 samples) every 1 s
    (floor(seconds) - 9.01 rounded down, plus one windows, less those the reference skips, see below),
    run the ONNX model on each, map its raw SIG / BAK / OVR outputs through the published quadratic
    fits and average over windows."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    x = _vector(audio, "audio")
    if sample_rate != DNSMOS_RATE:
        g = math.gcd(int(sample_rate), DNSMOS_RATE)
        x = scipy.signal.resample_poly(x, DNSMOS_RATE // g, int(sample_rate) // g)
    if x.size == 0:
        raise ValueError("audio is too short to resample to 16 kHz")
    while x.size < DNSMOS_WINDOW:
        x = np.concatenate([x, x])
    n_windows = int(np.floor(x.size / DNSMOS_RATE) - 9.01) + 1
    # The reference slices audio[int(k * 16000) : int((k + 9.01) * 16000)] and skips slices shorter
    # than 144,160 samples; float rounding makes that happen for k = 7..23, 119..122, ... (e.g.
    # int(16.01 * 16000) = 256159). We keep the same windows so that scores match the reference tool.
    starts = [
        k * DNSMOS_RATE
        for k in range(n_windows)
        if int((k + 9.01) * DNSMOS_RATE) - k * DNSMOS_RATE >= DNSMOS_WINDOW
        and k * DNSMOS_RATE + DNSMOS_WINDOW <= x.size
    ]
    batch = np.stack([x[s : s + DNSMOS_WINDOW] for s in starts]).astype(np.float32)
    session = _dnsmos_session()
    raw = session.run(None, {session.get_inputs()[0].name: batch})[0]
    scores = {}
    for k, name in enumerate(("sig", "bak", "ovr")):
        scores[name] = float(np.mean(np.polyval(_DNSMOS_POLY[name], raw[:, k].astype(np.float64))))
    return scores
