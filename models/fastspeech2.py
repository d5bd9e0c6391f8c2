"""FastSpeech 2 in Flax NNX (Ren et al. 2020, arXiv 2006.04558), in the form of github.com/ming024/FastSpeech2.

Phoneme ids -> encoder (FFT blocks) -> variance adaptor (duration, pitch and energy predictors; pitch and
energy bucketized into embeddings added to the hidden sequence; length regulator) -> decoder (FFT blocks)
-> linear projection to the mel bins -> optional postnet (residual).

Choices that follow ming024 (model/*.py, transformer/*.py, config/LJSpeech/model.yaml):
* FFT block = multi-head self-attention (padding keys masked; dropout on the output projection) + residual +
  LayerNorm, then conv(k=9) -> ReLU -> conv(k=1) + dropout + residual + LayerNorm; padded positions are
  zeroed after the attention and after the feed-forward part. Positions are the interleaved sinusoid table
  (sin on even, cos on odd channels) added to the embeddings / the regulated frames.
* Variance predictors: 2 x [Conv1d(k=3) -> ReLU -> LayerNorm -> Dropout] -> Linear -> scalar, outputs
  zeroed at padding. The duration predictor predicts log(d + 1); pitch and energy are phoneme-level and in
  normalized units, bucketized with `n_bins - 1` linear edges over `pitch_range` / `energy_range`
  (ming024's "linear" quantization, `torch.bucketize` = right-closed bins) into `n_bins` embeddings.
  The energy predictor sees the hidden sequence after the pitch embedding was added (as in ming024).
* Inference durations: `clip(round(exp(log_d) - 1) * duration_scale, 0)`, cast to int32 (truncation, as
  ming024's `int()` in its length regulator).
* Loss: mel L1 (+ postnet L1) averaged over valid frames x mel bins, MSE on log(d + 1), pitch and energy,
  each averaged over valid phonemes, summed with weight 1.

Deliberate differences:
* Padding invariance: intermediate activations of the variance predictors, the feed-forward convolutions
  and the postnet are zeroed at padded positions, and the pitch/energy embeddings are added only at valid
  phonemes. ming024 lets a padded neighbour leak into the last valid position through the k=3 convolutions;
  here appending padding never changes the valid outputs.
* Postnet: ming024's 5 convolutions (512 channels, kernel 5, tanh, dropout 0.5) use BatchNorm; here each
  uses a LayerNorm over channels instead. BatchNorm statistics would mix padded frames of other utterances
  into every frame and need mutable running statistics in the train state; a per-frame LayerNorm has the
  same parameter count (scale + bias per channel), is the same in train and eval mode and keeps padding
  invariance.
* Id 0 is an ordinary token (ming024 reserves it as a zero padding embedding); padding is given only by
  `phoneme_mask`, because phoneme sets such as Piper's use id 0 as a real symbol.
* Attention scores at padding keys are set to -1e9 instead of -inf, so an all-padding row (an utterance
  with no frames) gives finite values (zeroed afterwards) rather than NaN.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.transforms.initializers import Conv, Embed, Linear

_LN_EPS = 1e-5  # torch.nn.LayerNorm's default, as ming024 uses it


@dataclasses.dataclass(frozen=True)
class FastSpeech2Config:
    """Shape of a FastSpeech 2 model. `vocab_size` defaults to Piper's en-us phoneme_id_map size (151).

    `pitch_range` and `energy_range` are (lo, hi) in normalized units: the first and last of the
    `n_bins - 1` linear bucket edges (ming024 reads them from the corpus statistics).
    """

    vocab_size: int = 151
    d_model: int = 256
    heads: int = 2
    encoder_layers: int = 4
    decoder_layers: int = 6
    conv_filter: int = 1024
    conv_kernels: tuple[int, int] = (9, 1)
    variance_filter: int = 256
    variance_kernel: int = 3
    n_bins: int = 256
    n_mels: int = 80
    dropout: float = 0.2
    variance_dropout: float = 0.5
    postnet: bool = True
    max_positions: int = 2048
    pitch_range: tuple[float, float] = (-4.0, 4.0)
    energy_range: tuple[float, float] = (-4.0, 4.0)

    def __post_init__(self):
        for name in (
            "vocab_size",
            "d_model",
            "heads",
            "encoder_layers",
            "decoder_layers",
            "conv_filter",
            "variance_filter",
            "n_mels",
            "max_positions",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by heads={self.heads}")
        if self.d_model % 2:
            raise ValueError(f"d_model={self.d_model} must be even (sinusoidal positions pair sin and cos)")
        kernels = self.conv_kernels
        if (
            not isinstance(kernels, tuple)
            or len(kernels) != 2
            or not all(isinstance(k, int) and k >= 1 and k % 2 == 1 for k in kernels)
        ):
            raise ValueError(f"conv_kernels={kernels!r} must be a tuple of 2 odd positive ints, e.g. (9, 1)")
        k = self.variance_kernel
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"variance_kernel={k!r} must be an odd positive int")
        if not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"n_bins={self.n_bins!r} must be an int >= 2")
        for name in ("dropout", "variance_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r} must be a float in [0, 1)")
        if not isinstance(self.postnet, bool):
            raise ValueError(f"postnet={self.postnet!r} must be a bool")
        for name in ("pitch_range", "energy_range"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                or not value[0] < value[1]
            ):
                raise ValueError(f"{name}={value!r} must be a (lo, hi) tuple of finite numbers with lo < hi")


# ming024 config/LJSpeech/model.yaml: 256 wide, 2 heads, 4 encoder + 6 decoder layers, FFN 1024, postnet.
PAPER = FastSpeech2Config()
# A CPU-sized model for tests and tours: half the width, 3 + 3 layers, no postnet.
CPU = FastSpeech2Config(
    d_model=128, heads=2, encoder_layers=3, decoder_layers=3, conv_filter=512, variance_filter=128, postnet=False
)


def sinusoid_positions(length: int, dim: int) -> jax.Array:
    """ming024's position table `[length, dim]`: angle = pos / 10000^(2 (j // 2) / dim), sin at even j,
    cos at odd j."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angles = pos / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
    return jnp.asarray(table, jnp.float32)


def bin_edges(value_range: tuple[float, float], n_bins: int) -> np.ndarray:
    """The `n_bins - 1` linear bucket edges from lo to hi (ming024's "linear" quantization)."""
    lo, hi = value_range
    return np.linspace(lo, hi, n_bins - 1, dtype=np.float32)


def bucketize(values: jax.Array, edges) -> jax.Array:
    """Bucket index in [0, len(edges)] with right-closed bins: edges[i-1] < v <= edges[i] -> i
    (`torch.bucketize(v, edges)`, `np.digitize(v, edges, right=True)`)."""
    return jnp.searchsorted(jnp.asarray(edges), values, side="left").astype(jnp.int32)


def _concrete(x) -> np.ndarray | None:
    """x as a NumPy array when its values are known (not under a trace), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def length_regulate(hidden: jax.Array, durations: jax.Array, max_frames: int) -> tuple[jax.Array, jax.Array]:
    """Repeats phoneme `p` of `hidden [B, P, D]` `durations[b, p]` times -> `(frames [B, max_frames, D],
    frame_mask [B, max_frames] bool)`.

    jit-friendly for a static `max_frames` (cumulative sums + searchsorted + gather, no Python loop over
    phonemes). Frames at and beyond `sum(durations[b])` are masked zeros; a row whose durations sum to more
    than `max_frames` is truncated to its first `max_frames` frames (those frames are exact, the rest are
    dropped). Zero durations skip their phoneme.
    """
    if not isinstance(max_frames, (int, np.integer)) or isinstance(max_frames, bool) or max_frames < 1:
        raise ValueError(f"max_frames={max_frames!r} must be a positive int (a static frame count)")
    if hidden.ndim != 3:
        raise ValueError(f"hidden must be [batch, phonemes, dim], got shape {hidden.shape}")
    if durations.shape != hidden.shape[:2]:
        raise ValueError(f"durations must have shape {hidden.shape[:2]} (hidden's first two), got {durations.shape}")
    if not jnp.issubdtype(durations.dtype, jnp.integer):
        raise ValueError(f"durations must be integers, got dtype {durations.dtype}")
    concrete = _concrete(durations)
    if concrete is not None and (concrete < 0).any():
        raise ValueError("durations must be >= 0")
    ends = jnp.cumsum(durations.astype(jnp.int32), axis=1)  # [B, P]: frame where each phoneme ends
    t = jnp.arange(max_frames, dtype=jnp.int32)
    index = jax.vmap(lambda e: jnp.searchsorted(e, t, side="right"))(ends)  # first phoneme ending after t
    index = jnp.minimum(index, hidden.shape[1] - 1)
    frame_mask = t[None, :] < ends[:, -1:]
    frames = jnp.take_along_axis(hidden, index[..., None], axis=1)
    return frames * frame_mask[..., None].astype(hidden.dtype), frame_mask


def _conv1d(in_ch: int, out_ch: int, kernel: int, *, rngs: nnx.Rngs) -> nnx.Conv:
    return Conv(in_ch, out_ch, kernel_size=(kernel,), padding="SAME", rngs=rngs)


def _zero_pad(x: jax.Array, mask: jax.Array) -> jax.Array:
    return x * mask[..., None].astype(x.dtype)


class MultiHeadSelfAttention(nnx.Module):
    """Self-attention over valid keys, dropout on the output projection, residual + LayerNorm."""

    def __init__(self, d_model: int, heads: int, dropout: float, *, rngs: nnx.Rngs):
        self.heads = heads
        self.query = Linear(d_model, d_model, rngs=rngs)
        self.key = Linear(d_model, d_model, rngs=rngs)
        self.value = Linear(d_model, d_model, rngs=rngs)
        self.output = Linear(d_model, d_model, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.norm = nnx.LayerNorm(d_model, epsilon=_LN_EPS, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, s, d = x.shape
        hd = d // self.heads
        q, k, v = (proj(x).reshape(b, s, self.heads, hd) for proj in (self.query, self.key, self.value))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(hd))
        scores = jnp.where(mask[:, None, None, :], scores, -1e9)
        probs = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, d)
        return self.norm(x + self.dropout(self.output(context)))


class ConvFeedForward(nnx.Module):
    """conv(k0) -> ReLU -> conv(k1) -> dropout, residual + LayerNorm (ming024's PositionwiseFeedForward)."""

    def __init__(self, d_model: int, filters: int, kernels: tuple[int, int], dropout: float, *, rngs: nnx.Rngs):
        self.conv1 = _conv1d(d_model, filters, kernels[0], rngs=rngs)
        self.conv2 = _conv1d(filters, d_model, kernels[1], rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.norm = nnx.LayerNorm(d_model, epsilon=_LN_EPS, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        y = _zero_pad(jax.nn.relu(self.conv1(x)), mask)
        return self.norm(x + self.dropout(self.conv2(y)))


class FFTBlock(nnx.Module):
    """Feed-forward Transformer block; padded positions are zeroed after each half."""

    def __init__(self, config: FastSpeech2Config, *, rngs: nnx.Rngs):
        c = config
        self.attention = MultiHeadSelfAttention(c.d_model, c.heads, c.dropout, rngs=rngs)
        self.feed_forward = ConvFeedForward(c.d_model, c.conv_filter, c.conv_kernels, c.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = _zero_pad(self.attention(x, mask), mask)
        return _zero_pad(self.feed_forward(x, mask), mask)


class FFTStack(nnx.Module):
    """Sinusoidal positions added to the input, then `layers` FFT blocks (the encoder and decoder bodies)."""

    def __init__(self, config: FastSpeech2Config, layers: int, *, rngs: nnx.Rngs):
        self.d_model = config.d_model
        self.blocks = nnx.List([FFTBlock(config, rngs=rngs) for _ in range(layers)])

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + sinusoid_positions(x.shape[1], self.d_model)[None]
        for block in self.blocks:
            x = block(x, mask)
        return x


class VariancePredictor(nnx.Module):
    """2 x [Conv1d -> ReLU -> LayerNorm -> Dropout] -> Linear -> one scalar per position (0 at padding)."""

    def __init__(self, config: FastSpeech2Config, *, rngs: nnx.Rngs):
        c = config
        self.conv1 = _conv1d(c.d_model, c.variance_filter, c.variance_kernel, rngs=rngs)
        self.norm1 = nnx.LayerNorm(c.variance_filter, epsilon=_LN_EPS, rngs=rngs)
        self.conv2 = _conv1d(c.variance_filter, c.variance_filter, c.variance_kernel, rngs=rngs)
        self.norm2 = nnx.LayerNorm(c.variance_filter, epsilon=_LN_EPS, rngs=rngs)
        self.dropout = nnx.Dropout(c.variance_dropout, rngs=rngs)
        self.linear = Linear(c.variance_filter, 1, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = _zero_pad(self.dropout(self.norm1(jax.nn.relu(self.conv1(x)))), mask)
        x = _zero_pad(self.dropout(self.norm2(jax.nn.relu(self.conv2(x)))), mask)
        return self.linear(x)[..., 0] * mask.astype(x.dtype)


class PostNet(nnx.Module):
    """5 convolutions (kernel 5, 512 channels, LayerNorm, tanh on all but the last, dropout 0.5); the caller
    adds the input back (residual). See the module docstring for LayerNorm instead of BatchNorm."""

    def __init__(self, n_mels: int, *, channels: int = 512, kernel: int = 5, layers: int = 5, rngs: nnx.Rngs):
        widths = [n_mels] + [channels] * (layers - 1) + [n_mels]
        self.convs = nnx.List([_conv1d(a, b, kernel, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.norms = nnx.List([nnx.LayerNorm(b, epsilon=_LN_EPS, rngs=rngs) for b in widths[1:]])
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, mel: jax.Array, mask: jax.Array) -> jax.Array:
        x = mel
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            if i < last:
                x = jnp.tanh(x)
            x = _zero_pad(self.dropout(x), mask)
        return x


class FastSpeech2(nnx.Module):
    """Non-autoregressive TTS acoustic model: phoneme ids -> mel frames (see the module docstring).

    Dropout follows nnx's train/eval mode (`model.train()` / `model.eval()`); the dropout rngs live in the
    module (`rngs` given at construction, stream "dropout" if present, else "default").
    """

    def __init__(self, config: FastSpeech2Config, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.embedding = Embed(c.vocab_size, c.d_model, rngs=rngs)
        self.encoder = FFTStack(c, c.encoder_layers, rngs=rngs)
        self.duration_predictor = VariancePredictor(c, rngs=rngs)
        self.pitch_predictor = VariancePredictor(c, rngs=rngs)
        self.energy_predictor = VariancePredictor(c, rngs=rngs)
        self.pitch_embedding = Embed(c.n_bins, c.d_model, rngs=rngs)
        self.energy_embedding = Embed(c.n_bins, c.d_model, rngs=rngs)
        self.decoder = FFTStack(c, c.decoder_layers, rngs=rngs)
        self.mel_linear = Linear(c.d_model, c.n_mels, rngs=rngs)
        self.postnet = PostNet(c.n_mels, rngs=rngs) if c.postnet else None

    def _check(self, phonemes, phoneme_mask, max_frames, durations, pitch, energy):
        c = self.config
        if phonemes.ndim != 2 or not jnp.issubdtype(phonemes.dtype, jnp.integer):
            raise ValueError(f"phonemes must be 2-D ints [batch, phonemes], got {phonemes.dtype} {phonemes.shape}")
        if phoneme_mask.shape != phonemes.shape:
            raise ValueError(f"phoneme_mask must have phonemes' shape {phonemes.shape}, got {phoneme_mask.shape}")
        if phonemes.shape[1] > c.max_positions:
            raise ValueError(f"phonemes has {phonemes.shape[1]} positions > max_positions={c.max_positions}")
        if not isinstance(max_frames, (int, np.integer)) or isinstance(max_frames, bool) or max_frames < 1:
            raise ValueError(f"max_frames={max_frames!r} must be a positive int (a static frame count)")
        if max_frames > c.max_positions:
            raise ValueError(f"max_frames={max_frames} > max_positions={c.max_positions}")
        ids = _concrete(phonemes)
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= c.vocab_size):
            raise ValueError(f"phonemes must be ids in [0, vocab_size={c.vocab_size}), got [{ids.min()}, {ids.max()}]")
        for name, value in (("durations", durations), ("pitch", pitch), ("energy", energy)):
            if value is not None and value.shape != phonemes.shape:
                raise ValueError(f"{name} must have phonemes' shape {phonemes.shape}, got {value.shape}")
        if durations is not None:
            if not jnp.issubdtype(durations.dtype, jnp.integer):
                raise ValueError(f"durations must be integer frame counts, got dtype {durations.dtype}")
            d = _concrete(durations)
            if d is not None and (d < 0).any():
                raise ValueError("durations must be >= 0")

    def __call__(
        self,
        phonemes: jax.Array,
        phoneme_mask: jax.Array,
        *,
        max_frames: int,
        durations: jax.Array | None = None,
        pitch: jax.Array | None = None,
        energy: jax.Array | None = None,
        duration_scale: float = 1.0,
        pitch_scale: float = 1.0,
        energy_shift: float = 0.0,
    ) -> dict[str, jax.Array]:
        """Mel frames for `phonemes [B, P]` (valid where `phoneme_mask`).

        Given `durations` (int frames) / `pitch` / `energy` (normalized, phoneme-level) are used instead of the
        predictions (teacher forcing); None uses the predictions: pitch times `pitch_scale`, energy plus
        `energy_shift`, durations `clip(round(exp(log_d) - 1) * duration_scale, 0)` truncated to int.
        Durations at padded phonemes are set to 0. Returns `mel [B, max_frames, n_mels]`, `mel_postnet` (with
        the postnet), `frame_mask`, `phoneme_mask`, `log_duration`, `pitch`, `energy` (the predictions, with
        the controls applied when they were used) and `durations` (int32, the ones regulated).
        """
        self._check(phonemes, phoneme_mask, max_frames, durations, pitch, energy)
        c = self.config
        mask = phoneme_mask.astype(bool)
        maskf = mask.astype(jnp.float32)
        x = _zero_pad(self.encoder(self.embedding(phonemes), mask), mask)

        log_duration = self.duration_predictor(x, mask)
        pitch_pred = self.pitch_predictor(x, mask)
        if pitch is None:
            pitch_pred = pitch_pred * pitch_scale * maskf
            pitch_used = pitch_pred
        else:
            pitch_used = pitch
        x = x + _zero_pad(self.pitch_embedding(bucketize(pitch_used, bin_edges(c.pitch_range, c.n_bins))), mask)
        energy_pred = self.energy_predictor(x, mask)
        if energy is None:
            energy_pred = (energy_pred + energy_shift) * maskf
            energy_used = energy_pred
        else:
            energy_used = energy
        x = x + _zero_pad(self.energy_embedding(bucketize(energy_used, bin_edges(c.energy_range, c.n_bins))), mask)

        if durations is None:
            durations = jnp.clip(jnp.round(jnp.exp(log_duration) - 1.0) * duration_scale, 0.0).astype(jnp.int32)
        durations = jnp.where(mask, durations.astype(jnp.int32), 0)
        frames, frame_mask = length_regulate(x, durations, max_frames)
        hidden = self.decoder(frames, frame_mask)
        mel = _zero_pad(self.mel_linear(hidden), frame_mask)
        out = {
            "mel": mel,
            "frame_mask": frame_mask,
            "phoneme_mask": mask,
            "log_duration": log_duration,
            "pitch": pitch_pred,
            "energy": energy_pred,
            "durations": durations,
        }
        if self.postnet is not None:
            out["mel_postnet"] = _zero_pad(self.postnet(mel, frame_mask) + mel, frame_mask)
        return out


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim)), values.shape)
    m = m.astype(values.dtype)
    return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0)


def fastspeech2_loss(outputs: dict, targets: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ming024's FastSpeech 2 loss -> `(total, metrics)`.

    `targets`: `mel [B, T, n_mels]` (T = the model's max_frames), `durations [B, P]` int, `pitch [B, P]`,
    `energy [B, P]`; optional `phoneme_mask` / `frame_mask` (default: the ones in `outputs`, which under
    teacher forcing are the true ones). Terms: `mel_loss` (L1 over valid frames x bins), `postnet_mel_loss`
    (when `outputs` has `mel_postnet`), `duration_loss` (MSE between predicted log_duration and
    log(d + 1)), `pitch_loss`, `energy_loss` (MSE), each averaged over valid positions; `loss` is their sum.
    """
    mel = targets["mel"]
    if mel.shape != outputs["mel"].shape:
        raise ValueError(f"targets['mel'] must have the outputs' mel shape {outputs['mel'].shape}, got {mel.shape}")
    phoneme_mask = targets.get("phoneme_mask", outputs["phoneme_mask"])
    frame_mask = targets.get("frame_mask", outputs["frame_mask"])
    for name in ("durations", "pitch", "energy"):
        if targets[name].shape != phoneme_mask.shape:
            raise ValueError(f"targets[{name!r}] must have shape {phoneme_mask.shape}, got {targets[name].shape}")
    metrics = {"mel_loss": _masked_mean(jnp.abs(outputs["mel"] - mel), frame_mask)}
    if "mel_postnet" in outputs:
        metrics["postnet_mel_loss"] = _masked_mean(jnp.abs(outputs["mel_postnet"] - mel), frame_mask)
    log_d = jnp.log(targets["durations"].astype(jnp.float32) + 1.0)
    metrics["duration_loss"] = _masked_mean(jnp.square(outputs["log_duration"] - log_d), phoneme_mask)
    metrics["pitch_loss"] = _masked_mean(jnp.square(outputs["pitch"] - targets["pitch"]), phoneme_mask)
    metrics["energy_loss"] = _masked_mean(jnp.square(outputs["energy"] - targets["energy"]), phoneme_mask)
    total = sum(metrics.values())
    metrics["loss"] = total
    return total, metrics
