"""Audio features of the FastSpeech 2 / HiFi-GAN V1 front end, in NumPy.

The framing is the one of ming024's FastSpeech 2 and HiFi-GAN V1
(https://github.com/ming024/FastSpeech2, https://github.com/jik876/hifi-gan): 22,050 Hz audio,
n_fft = window = 1024, hop 256, periodic Hann window, reflect padding of (n_fft - hop) / 2 = 384
samples on both sides and no centring, magnitude STFT, 80 Slaney mel filters from 0 to 8000 Hz and
`log(clamp(mel, 1e-5))`. For audio whose length L is a multiple of 256 this gives exactly L / 256
frames; frame i covers the samples around i * 256 + 128.

- `log_mel`, `energy` (FastSpeech 2's energy: L2 norm of the magnitude spectrum per frame),
  `pitch` (our own YIN, de Cheveigne & Kawahara 2002, JASA 111(4)), `interpolate_unvoiced` and
  `phoneme_average` (FastSpeech 2's phoneme-level pitch / energy, arXiv 2006.04558);
- `mel_filters` (the Slaney mel filter bank, as librosa's `filters.mel(htk=False, norm="slaney")`),
  `stft_magnitude` and `griffin_lim` (Griffin & Lim 1984, with a least-squares inverse of the mel
  filters), used to listen to mels without a neural vocoder.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FMAX",
    "FMIN",
    "HOP",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "energy",
    "griffin_lim",
    "hz_to_mel",
    "interpolate_unvoiced",
    "istft",
    "log_mel",
    "mel_filters",
    "mel_to_hz",
    "phoneme_average",
    "pitch",
    "stft",
    "stft_magnitude",
]

SAMPLE_RATE = 22050
N_FFT = 1024
HOP = 256
N_MELS = 80
FMIN = 0.0
FMAX = 8000.0
LOG_FLOOR = 1e-5
# Frames whose RMS (over the YIN integration window) is below this are unvoiced: -60 dBFS.
SILENCE_RMS = 1e-3

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per
# factor 6.4, so that the two parts meet at 1 kHz = 15 mels).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0

_FILTER_CACHE: dict[tuple, np.ndarray] = {}


def hz_to_mel(hz):
    """Slaney mel of `hz` (linear below 1 kHz, logarithmic above), as librosa's `hz_to_mel(htk=False)`."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel):
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def mel_filters(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Slaney mel filter bank [n_mels, n_fft // 2 + 1] float32, as librosa's
    `filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")`.

    n_mels + 2 points equally spaced on the Slaney mel scale between fmin and fmax give the edges
    f_lo, centre, f_hi of each triangle over the FFT bin frequencies k * sample_rate / n_fft; each
    triangle (peak 1 at its centre) is scaled by 2 / (f_hi - f_lo) so that it has unit area in Hz.
    """
    sample_rate = _positive_int(sample_rate, "sample_rate")
    n_fft = _positive_int(n_fft, "n_fft")
    n_mels = _positive_int(n_mels, "n_mels")
    if not (0.0 <= fmin < fmax <= sample_rate / 2):
        raise ValueError(
            f"fmin and fmax must satisfy 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}, "
            f"got fmin={fmin}, fmax={fmax}"
        )
    key = (sample_rate, n_fft, n_mels, float(fmin), float(fmax))
    if key not in _FILTER_CACHE:
        fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
        mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
        fdiff = np.diff(mel_f)
        ramps = mel_f[:, None] - fft_freqs[None, :]
        lower = -ramps[:-2] / fdiff[:-1, None]
        upper = ramps[2:] / fdiff[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper))
        weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
        weights = weights.astype(np.float32)
        weights.setflags(write=False)
        _FILTER_CACHE[key] = weights
    return _FILTER_CACHE[key].copy()


def _check_audio(audio, name: str = "audio") -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of samples, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty; it must hold at least one sample")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds non-finite samples (NaN or inf); all samples must be finite")
    return x


def _check_rate(sample_rate) -> None:
    if isinstance(sample_rate, bool) or sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"sample_rate must be {SAMPLE_RATE} (the FastSpeech 2 / HiFi-GAN V1 front end), "
            f"got {sample_rate!r}; resample the audio first"
        )


def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window(n) / scipy.signal.get_window("hann", n))."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    pad = (n_fft - hop) // 2
    if x.size + 2 * pad < n_fft:
        raise ValueError(f"audio has {x.size} samples; at least {n_fft - 2 * pad} are needed for one frame")
    padded = np.pad(x, (pad, pad), mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]


def stft(audio, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Complex STFT [frames, n_fft // 2 + 1] complex128 with the front end's framing (periodic Hann
    window of n_fft samples, reflect padding of (n_fft - hop) // 2 on both sides, no centring)."""
    n_fft = _positive_int(n_fft, "n_fft")
    hop = _positive_int(hop, "hop")
    if hop > n_fft:
        raise ValueError(f"hop must be at most n_fft = {n_fft}, got {hop}")
    x = _check_audio(audio)
    return np.fft.rfft(_frames(x, n_fft, hop) * _hann(n_fft), axis=1)


def stft_magnitude(audio, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Magnitude STFT [frames, n_fft // 2 + 1] float64 (see `stft`); frames = 1 + (L - hop) // hop
    for L samples with the default padding, i.e. L / 256 when L is a multiple of 256."""
    return np.abs(stft(audio, n_fft, hop))


def log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log mel spectrogram [frames, 80] float32 = log(max(mel_filters() @ |STFT|, 1e-5)) (natural
    log), the FastSpeech 2 / HiFi-GAN V1 target. Only 22,050 Hz audio is accepted."""
    _check_rate(sample_rate)
    magnitude = stft_magnitude(audio)
    mel = magnitude @ mel_filters().astype(np.float64).T
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def energy(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """FastSpeech 2's energy [frames] float32: the L2 norm over frequency of each frame's STFT
    magnitude (same framing as `log_mel`)."""
    _check_rate(sample_rate)
    return np.linalg.norm(stft_magnitude(audio), axis=1).astype(np.float32)


def pitch(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    hop: int = HOP,
    fmin: float = 55.0,
    fmax: float = 400.0,
    threshold: float = 0.15,
) -> np.ndarray:
    """F0 in Hz per frame [frames] float32 by YIN (de Cheveigne & Kawahara 2002, JASA 111(4)); 0 marks
    unvoiced frames.

    Frame i is centred on sample i * hop + hop // 2 (the centre of mel frame i) and holds
    W + tau_max samples (zero outside the audio), tau_max = ceil(sample_rate / fmin) and the
    integration window W = tau_max (so a frame spans about 2 / fmin seconds). Per frame:
    difference function d(tau) = sum_{j<W} (x_j - x_{j+tau})^2 (from energies and an FFT
    cross-correlation), cumulative-mean-normalized d'(tau) = d(tau) tau / sum_{k=1..tau} d(k),
    the first tau in [floor(sample_rate / fmax), tau_max] with d'(tau) < threshold followed down to
    its local minimum (absolute threshold, step 4), then parabolic interpolation of d' around it
    (step 5). Frames with no such dip, or whose RMS over the window is below -60 dBFS, are unvoiced.
    Frames = 1 + (L - hop) // hop, as `log_mel` for hop 256.
    """
    _check_rate(sample_rate)
    hop = _positive_int(hop, "hop")
    if not (0 < fmin < fmax < sample_rate / 2):
        raise ValueError(f"fmin and fmax must satisfy 0 < fmin < fmax < sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    x = _check_audio(audio)
    if x.size < hop:
        raise ValueError(f"audio has {x.size} samples; at least hop = {hop} are needed for one frame")
    n_frames = 1 + (x.size - hop) // hop
    tau_max = int(np.ceil(sample_rate / fmin))
    tau_min = max(2, int(np.floor(sample_rate / fmax)))
    window = tau_max
    length = window + tau_max + 1
    # Frame i spans [c_i - length // 2, c_i - length // 2 + length), c_i = i * hop + hop // 2.
    left = length // 2
    start0 = hop // 2 - left
    pad_left = max(0, -start0)
    last_end = (n_frames - 1) * hop + start0 + length
    pad_right = max(0, last_end - x.size)
    padded = np.pad(x, (pad_left, pad_right))
    offset = start0 + pad_left
    frames = np.lib.stride_tricks.sliding_window_view(padded, length)[offset::hop][:n_frames]

    n = 1 << int(np.ceil(np.log2(length)))
    spec_head = np.fft.rfft(frames[:, :window], n=n, axis=1)
    spec_all = np.fft.rfft(frames, n=n, axis=1)
    corr = np.fft.irfft(np.conj(spec_head) * spec_all, n=n, axis=1)[:, : tau_max + 1]
    squares = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(frames**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 1)
    e_shift = squares[:, taus + window] - squares[:, taus]
    e0 = e_shift[:, :1]
    diff = np.maximum(e0 + e_shift - 2.0 * corr, 0.0)
    diff[:, 0] = 0.0

    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[:, 1:] = np.where(cum > 0, diff[:, 1:] * taus[1:] / cum, 1.0)

    search = cmnd[:, tau_min : tau_max + 1]
    below = search < threshold
    voiced = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # Follow the dip down to its local minimum: the first index >= first where the next value is
    # not smaller (the last index counts as such a point).
    rising = np.ones_like(below)
    rising[:, :-1] = search[:, 1:] >= search[:, :-1]
    cols = np.arange(search.shape[1])
    rising &= cols[None, :] >= first[:, None]
    best = np.argmax(rising, axis=1) + tau_min

    rows = np.arange(n_frames)
    inner = (best > tau_min) & (best < tau_max)
    b = np.clip(best, 1, tau_max - 1)
    y0, y1, y2 = cmnd[rows, b - 1], cmnd[rows, b], cmnd[rows, b + 1]
    curvature = y0 - 2.0 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(inner & (curvature > 0), 0.5 * (y0 - y2) / curvature, 0.0)
    shift = np.clip(shift, -1.0, 1.0)
    period = best + shift

    rms = np.sqrt(e0[:, 0] / window)
    voiced &= rms >= SILENCE_RMS
    f0 = np.where(voiced, sample_rate / period, 0.0)
    return f0.astype(np.float32)


def interpolate_unvoiced(f0) -> np.ndarray:
    """Linear interpolation of F0 over unvoiced frames (value <= 0) between the neighbouring voiced
    frames; unvoiced frames before the first / after the last voiced frame hold that frame's value;
    an all-unvoiced track gives zeros. [T] float32 (FastSpeech 2's continuous pitch, arXiv 2006.04558)."""
    f = np.asarray(f0)
    if f.ndim != 1 or f.size == 0:
        raise ValueError(f"f0 must be a non-empty 1-D array, got shape {f.shape}")
    f = f.astype(np.float64)
    if not np.all(np.isfinite(f)):
        raise ValueError("f0 holds non-finite values; all values must be finite")
    voiced = f > 0
    if not voiced.any():
        return np.zeros(f.shape, np.float32)
    idx = np.arange(f.size)
    return np.interp(idx, idx[voiced], f[voiced]).astype(np.float32)


def phoneme_average(values, durations) -> np.ndarray:
    """Mean of `values` [T] over each phoneme's frames [P] float32; phoneme p covers frames
    sum(durations[:p]) .. sum(durations[:p+1]) - 1, zero-length phonemes get 0. The durations
    (non-negative integers) must sum to T."""
    v = np.asarray(values)
    d = np.asarray(durations)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"durations must be a non-empty 1-D array, got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.integer):
        if not np.issubdtype(d.dtype, np.floating) or not np.all(d == np.round(d)):
            raise ValueError(f"durations must be integers, got dtype {d.dtype}")
        d = d.astype(np.int64)
    if np.any(d < 0):
        raise ValueError("durations must be non-negative")
    if int(d.sum()) != v.size:
        raise ValueError(f"durations must sum to len(values) = {v.size}, they sum to {int(d.sum())}")
    v = v.astype(np.float64)
    cs = np.concatenate([[0.0], np.cumsum(v)])
    ends = np.cumsum(d)
    starts = ends - d
    sums = cs[ends] - cs[starts]
    out = np.where(d > 0, sums / np.maximum(d, 1), 0.0)
    return out.astype(np.float32)


def istft(spec, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Inverse of `stft` [frames, n_fft // 2 + 1] -> audio [frames * hop] float64: windowed inverse FFT
    of each frame, overlap-add, division by the summed squared window (where it is not tiny), and
    removal of the (n_fft - hop) // 2 padding on both sides."""
    s = np.asarray(spec)
    n_fft = _positive_int(n_fft, "n_fft")
    hop = _positive_int(hop, "hop")
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] != n_fft // 2 + 1:
        raise ValueError(f"spec must have shape [frames >= 1, {n_fft // 2 + 1}], got {s.shape}")
    n_frames = s.shape[0]
    win = _hann(n_fft)
    frames = np.fft.irfft(s, n=n_fft, axis=1) * win
    total = (n_frames - 1) * hop + n_fft
    out = np.zeros(total)
    norm = np.zeros(total)
    # Overlap-add in n_fft // hop passes of non-overlapping frames (vectorized per pass).
    for phase in range(int(np.ceil(n_fft / hop))):
        idx = np.arange(phase, n_frames, int(np.ceil(n_fft / hop)))
        if idx.size == 0:
            continue
        pos = (idx[:, None] * hop + np.arange(n_fft)[None, :]).ravel()
        np.add.at(out, pos, frames[idx].ravel())
        np.add.at(norm, pos, np.broadcast_to(win**2, (idx.size, n_fft)).ravel())
    out = np.where(norm > 1e-8, out / np.maximum(norm, 1e-8), 0.0)
    pad = (n_fft - hop) // 2
    return out[pad : pad + n_frames * hop]


def griffin_lim(log_mel: np.ndarray, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Audio [T * 256] float32 from a log mel [T, 80] (22,050 Hz front end): the magnitude is the
    least-squares solution of mel_filters() @ |S| = exp(log_mel) (pseudo-inverse, clipped at 0), the
    phase starts uniformly random (`seed`) and `n_iter` Griffin-Lim iterations (Griffin & Lim 1984,
    IEEE TASSP 32(2)) alternate `istft` and `stft`, keeping the phase of the re-analysed signal."""
    m = np.asarray(log_mel)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] != N_MELS:
        raise ValueError(f"log_mel must have shape [frames >= 1, {N_MELS}], got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("log_mel holds non-finite values; all values must be finite")
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    filters = mel_filters().astype(np.float64)
    magnitude = np.maximum(np.exp(m.astype(np.float64)) @ np.linalg.pinv(filters).T, 0.0)
    rng = np.random.default_rng(seed)
    phase = np.exp(2j * np.pi * rng.random(magnitude.shape))
    audio = istft(magnitude * phase)
    for _ in range(int(n_iter)):
        spec = stft(audio)
        phase = spec / np.maximum(np.abs(spec), 1e-12)
        audio = istft(magnitude * phase)
    return audio.astype(np.float32)
