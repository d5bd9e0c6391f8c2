"""Training ResGrad's parts through the house `Trainer`: FastSpeech 2, then the refiners on its output.

* Normalization (`FeatureStats`, from the training split only): log-mel per-bin mean and standard
  deviation; phoneme-level log-F0 (unvoiced frames linearly interpolated, then averaged per phoneme,
  as ming024's FastSpeech 2 does with F0) and energy, each z-scored, with the bins' ranges for the
  quantized embeddings; after FastSpeech 2 is trained, the per-bin deviation of the residual.
* FastSpeech 2 trains on whole utterances grouped in frame-length buckets (`FRAME_BUCKET`-frame
  multiples), so only a few shapes are compiled and little padding is computed.
* The refiners train on `segment_frames`-frame windows cut at random from the training utterances
  (Adibian's ResGrad and DiffSpeech train on windows too). Every refiner sees the same conditioning,
  FastSpeech 2's teacher-forced mel (ground-truth durations, pitch and energy, so its frames line up
  with the recording), normalized like the ground truth; they differ only in the target:
  - `resgrad`: the residual (ground truth - FastSpeech 2), divided by its per-bin deviation;
  - `full`: the normalized ground-truth mel itself (the Grad-TTS / DiffSpeech setting; shallow
    diffusion samples from this model too, starting part-way).
Batches are functions of (seed, step), so a killed run resumes to the same parameters.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models import fastspeech2 as fs2
from frugal.models.diffusion_denoisers import UNet2DDenoiser, WaveNetDenoiser
from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step, read_metrics
from frugal.scripts.systems.resgrad import features
from frugal.transforms import diffusion

FRAME_BUCKET = 128  # inference pads frame counts to multiples of this (few compiled shapes)
REFINERS = ("resgrad", "full")
# The tests' FastSpeech 2: one encoder and one decoder block, so it compiles in seconds.
TINY_FS2 = dataclasses.replace(
    fs2.CPU, d_model=32, encoder_layers=1, decoder_layers=1, conv_filter=64, variance_filter=32
)


# --------------------------------------------------------------------------------------------
# Normalization


@dataclasses.dataclass
class FeatureStats:
    mel_mean: np.ndarray  # [n_mels]
    mel_std: np.ndarray  # [n_mels]
    pitch_mean: float
    pitch_std: float
    energy_mean: float
    energy_std: float
    pitch_range: tuple[float, float]
    energy_range: tuple[float, float]
    residual_std: np.ndarray | None = None  # [n_mels], set once FastSpeech 2 is trained

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_json(cls, data: dict) -> FeatureStats:
        arrays = {"mel_mean", "mel_std", "residual_std"}
        kw = {k: (np.asarray(v, np.float32) if k in arrays and v is not None else v) for k, v in data.items()}
        kw["pitch_range"], kw["energy_range"] = tuple(kw["pitch_range"]), tuple(kw["energy_range"])
        return cls(**kw)


def _log_f0_per_phoneme(utt) -> np.ndarray:
    f0 = features.interpolate_unvoiced(utt.f0)
    log_f0 = np.where(f0 > 0, np.log(np.maximum(f0, 1e-3)), 0.0)
    return features.phoneme_average(log_f0, utt.durations)


def compute_stats(train) -> FeatureStats:
    if not train:
        raise ValueError("the training split is empty: FastSpeech 2 needs training utterances")
    mels = np.concatenate([u.mel for u in train])
    pitch = np.concatenate([_log_f0_per_phoneme(u)[u.durations > 0] for u in train])
    pitch = pitch[pitch != 0]
    energy = np.concatenate([features.phoneme_average(u.energy, u.durations)[u.durations > 0] for u in train])
    p_mean, p_std = (float(pitch.mean()), float(pitch.std() + 1e-6)) if pitch.size else (0.0, 1.0)
    e_mean, e_std = float(energy.mean()), float(energy.std() + 1e-6)
    pz = (pitch - p_mean) / p_std if pitch.size else np.zeros(1)
    ez = (energy - e_mean) / e_std
    return FeatureStats(
        mel_mean=mels.mean(0).astype(np.float32),
        mel_std=(mels.std(0) + 1e-3).astype(np.float32),
        pitch_mean=p_mean,
        pitch_std=p_std,
        energy_mean=e_mean,
        energy_std=e_std,
        pitch_range=(float(pz.min()), float(pz.max())),
        energy_range=(float(ez.min()), float(ez.max())),
    )


def phoneme_targets(utt, stats: FeatureStats) -> tuple[np.ndarray, np.ndarray]:
    """Phoneme-level normalized log-F0 (0 where a phoneme has no voiced estimate) and energy."""
    log_f0 = _log_f0_per_phoneme(utt)
    pitch = np.where(log_f0 != 0, (log_f0 - stats.pitch_mean) / stats.pitch_std, 0.0)
    energy = (features.phoneme_average(utt.energy, utt.durations) - stats.energy_mean) / stats.energy_std
    return pitch.astype(np.float32), energy.astype(np.float32)


# --------------------------------------------------------------------------------------------
# FastSpeech 2


def fs2_config(size: str, vocab_size: int, stats: FeatureStats) -> fs2.FastSpeech2Config:
    sizes = {"tiny": TINY_FS2, "cpu": fs2.CPU, "paper": fs2.PAPER}
    if size not in sizes:
        raise ValueError(f"fs2_size must be one of {tuple(sizes)}, got {size!r}")
    base = sizes[size]
    return dataclasses.replace(
        base, vocab_size=vocab_size, pitch_range=stats.pitch_range, energy_range=stats.energy_range
    )


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclasses.dataclass
class PaddedSet:
    """Utterances padded to one (phonemes, frames) shape: one bucket."""

    phonemes: np.ndarray  # [N, P] int32
    phoneme_mask: np.ndarray  # [N, P] bool
    durations: np.ndarray  # [N, P] int32
    pitch: np.ndarray  # [N, P]
    energy: np.ndarray  # [N, P]
    mel: np.ndarray  # [N, T, n_mels] (ground truth, log)
    frame_mask: np.ndarray  # [N, T] bool
    index: np.ndarray  # [N] positions in the source list


def pad_utterances(utts, stats: FeatureStats, index, *, max_phonemes: int, max_frames: int) -> PaddedSet:
    n, n_mels = len(index), utts[index[0]].mel.shape[1]
    out = PaddedSet(
        np.zeros((n, max_phonemes), np.int32),
        np.zeros((n, max_phonemes), bool),
        np.zeros((n, max_phonemes), np.int32),
        np.zeros((n, max_phonemes), np.float32),
        np.zeros((n, max_phonemes), np.float32),
        np.zeros((n, max_frames, n_mels), np.float32),
        np.zeros((n, max_frames), bool),
        np.asarray(index, np.int64),
    )
    for row, i in enumerate(index):
        u = utts[i]
        p, t = len(u.phoneme_ids), u.mel.shape[0]
        pitch, energy = phoneme_targets(u, stats)
        out.phonemes[row, :p] = u.phoneme_ids
        out.phoneme_mask[row, :p] = True
        out.durations[row, :p] = u.durations
        out.pitch[row, :p], out.energy[row, :p] = pitch, energy
        out.mel[row, :t] = u.mel
        out.frame_mask[row, :t] = True
    return out


def buckets(utts, stats: FeatureStats, count: int = 4) -> list[PaddedSet]:
    """Splits utterances sorted by frame count into `count` groups of about equal size, each padded to
    its longest member (frames rounded up to 16): `count` compiled shapes, little padding."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    order = np.argsort([u.mel.shape[0] for u in utts], kind="stable")
    out = []
    for index in np.array_split(order, min(count, len(utts))):
        frames = round_up(max(utts[i].mel.shape[0] for i in index), 16)
        max_p = round_up(max(len(utts[i].phoneme_ids) for i in index), 16)
        out.append(pad_utterances(utts, stats, index.tolist(), max_phonemes=max_p, max_frames=frames))
    return out


def fs2_loss(model, batch, rng, constants):
    outputs = model(
        batch["phonemes"],
        batch["phoneme_mask"],
        max_frames=batch["mel"].shape[1],
        durations=batch["durations"],
        pitch=batch["pitch"],
        energy=batch["energy"],
    )
    return fs2.fastspeech2_loss(outputs, batch)


_FS2_STEP = loss_step(fs2_loss, has_aux=True)
_DENOISE_STEPS: dict = {}


def adam_schedule(lr: float, steps: int, *, b2: float = 0.999, warmup_fraction: float = 0.05):
    warmup = max(1, int(warmup_fraction * steps))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule, b1=0.9, b2=b2))


def bucket_batches(sets: list[PaddedSet], batch: int, seed: int):
    """batch_at(step, rows): a bucket drawn in proportion to its size, then `batch` of its utterances."""
    sizes = np.asarray([len(s.index) for s in sets], np.float64)

    def batch_at(step: int, rows: slice):
        rng = np.random.default_rng([seed, step])
        s = sets[int(rng.choice(len(sets), p=sizes / sizes.sum()))]
        pick = rng.choice(len(s.index), batch, replace=len(s.index) < batch)
        out = {
            "phonemes": s.phonemes[pick],
            "phoneme_mask": s.phoneme_mask[pick],
            "durations": s.durations[pick],
            "pitch": s.pitch[pick],
            "energy": s.energy[pick],
            "mel": s.mel[pick],
            "frame_mask": s.frame_mask[pick],
        }
        return {k: v[rows] for k, v in out.items()}

    return batch_at


def train_fs2(model, sets: list[PaddedSet], *, steps: int, batch: int, lr: float, seed: int, workdir, progress: bool):
    model.train()
    trainer = Trainer(
        TrainState(model, adam_schedule(lr, steps, b2=0.98)),
        _FS2_STEP,
        config=TrainerConfig(
            num_steps=steps,
            seed=seed,
            log_every=max(1, steps // 20),
            checkpoint_every=max(1, steps // 4),
            progress=progress,
            progress_label="FastSpeech 2",
        ),
        workdir=workdir,
    )
    result = trainer.run(bucket_batches(sets, batch, seed), batch)
    trained = result.state.model
    trained.eval()
    return trained, read_metrics(workdir)


@nnx.jit(static_argnames=("max_frames",))
def _fs2_forward(model, phonemes, mask, durations, pitch, energy, *, max_frames):
    return model(phonemes, mask, max_frames=max_frames, durations=durations, pitch=pitch, energy=energy)


@nnx.jit(static_argnames=("max_frames",))
def _fs2_infer(model, phonemes, mask, *, max_frames):
    return model(phonemes, mask, max_frames=max_frames)


def fs2_teacher_forced(model, utts, stats: FeatureStats) -> list[np.ndarray]:
    """FastSpeech 2's mel for each utterance with its ground-truth durations, pitch and energy."""
    out: list[np.ndarray | None] = [None] * len(utts)
    for s in buckets(utts, stats, count=max(1, len(utts) // 16)):
        for start in range(0, len(s.index), 16):
            sl = slice(start, start + 16)
            res = _fs2_forward(
                model,
                jnp.asarray(s.phonemes[sl]),
                jnp.asarray(s.phoneme_mask[sl]),
                jnp.asarray(s.durations[sl]),
                jnp.asarray(s.pitch[sl]),
                jnp.asarray(s.energy[sl]),
                max_frames=s.mel.shape[1],
            )
            mel = np.asarray(res.get("mel_postnet", res["mel"]))
            for row, i in enumerate(s.index[sl]):
                out[i] = mel[row, : utts[i].mel.shape[0]]
    return out


def fs2_infer(model, phoneme_ids: np.ndarray, *, max_frames: int) -> np.ndarray:
    """Text-to-mel with predicted durations, pitch and energy for one utterance: `[frames, n_mels]`."""
    p = round_up(len(phoneme_ids), 16)
    ids = np.zeros((1, p), np.int32)
    ids[0, : len(phoneme_ids)] = phoneme_ids
    mask = np.arange(p)[None] < len(phoneme_ids)
    res = _fs2_infer(model, jnp.asarray(ids), jnp.asarray(mask), max_frames=max_frames)
    frames = int(min(int(np.asarray(res["durations"]).sum()), max_frames))
    return np.asarray(res.get("mel_postnet", res["mel"]))[0, : max(frames, 1)]


# --------------------------------------------------------------------------------------------
# Refiners


def make_denoiser(kind: str, n_mels: int, *, channels: int, layers: int, seed: int):
    rngs = nnx.Rngs(seed)
    if kind == "wavenet":
        return WaveNetDenoiser(n_mels, channels=channels, layers=layers, rngs=rngs)
    if kind == "unet":
        return UNet2DDenoiser(n_mels, dim=channels, rngs=rngs)
    raise ValueError(f"denoiser must be 'wavenet' or 'unet', got {kind!r}")


def normalize_mel(mel: np.ndarray, stats: FeatureStats) -> np.ndarray:
    return ((mel - stats.mel_mean) / stats.mel_std).astype(np.float32)


def refiner_target(kind: str, gt: np.ndarray, base: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """What a refiner learns to generate for one utterance (normalized)."""
    if kind == "resgrad":
        return ((gt - base) / stats.residual_std).astype(np.float32)
    if kind == "full":
        return normalize_mel(gt, stats)
    raise ValueError(f"refiner must be one of {REFINERS}, got {kind!r}")


def refiner_output(kind: str, generated: np.ndarray, base: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """A refiner's generated (normalized) array back to a log-mel."""
    if kind == "resgrad":
        return base + generated * stats.residual_std
    return generated * stats.mel_std + stats.mel_mean


def segment_batches(conds: list[np.ndarray], targets: list[np.ndarray], *, segment: int, batch: int, seed: int):
    """batch_at(step, rows): random `segment`-frame windows (zero padded, masked) of random utterances,
    drawn in proportion to utterance length."""
    lengths = np.asarray([c.shape[0] for c in conds], np.float64)
    n_mels = conds[0].shape[1]

    def batch_at(step: int, rows: slice):
        rng = np.random.default_rng([seed, step])
        picks = rng.choice(len(conds), batch, p=lengths / lengths.sum())
        cond = np.zeros((batch, segment, n_mels), np.float32)
        x0 = np.zeros((batch, segment, n_mels), np.float32)
        mask = np.zeros((batch, segment), bool)
        for row, i in enumerate(picks):
            t = conds[i].shape[0]
            start = int(rng.integers(0, max(t - segment, 0) + 1))
            n = min(segment, t - start)
            cond[row, :n] = conds[i][start : start + n]
            x0[row, :n] = targets[i][start : start + n]
            mask[row, :n] = True
        return {k: v[rows] for k, v in {"cond": cond, "x0": x0, "mask": mask}.items()}

    return batch_at


def denoise_step(schedule_kind: str, num_steps: int, parameterization: str, loss: str):
    """One Trainer step function per diffusion setting (refiners with equal settings share its compile)."""
    key = (schedule_kind, num_steps, parameterization, loss)
    if key not in _DENOISE_STEPS:
        schedule = diffusion.make_schedule(schedule_kind, num_steps)

        def loss_fn(model, batch, rng, constants):
            mask = batch["mask"]
            value = diffusion.diffusion_loss(
                lambda x, t: model(x, t, batch["cond"], mask),
                schedule,
                batch["x0"],
                rng,
                mask=mask[..., None],
                parameterization=parameterization,
                loss=loss,
            )
            return value, {}

        _DENOISE_STEPS[key] = loss_step(loss_fn, has_aux=True)
    return _DENOISE_STEPS[key]


def train_refiner(
    denoiser,
    conds: list[np.ndarray],
    targets: list[np.ndarray],
    *,
    schedule_kind: str,
    num_steps: int,
    parameterization: str,
    loss: str,
    steps: int,
    batch: int,
    segment: int,
    lr: float,
    seed: int,
    workdir,
    progress: bool,
    label: str,
):
    trainer = Trainer(
        TrainState(denoiser, adam_schedule(lr, steps)),
        denoise_step(schedule_kind, num_steps, parameterization, loss),
        config=TrainerConfig(
            num_steps=steps,
            seed=seed,
            log_every=max(1, steps // 20),
            checkpoint_every=max(1, steps // 4),
            progress=progress,
            progress_label=label,
        ),
        workdir=workdir,
    )
    result = trainer.run(segment_batches(conds, targets, segment=segment, batch=batch, seed=seed), batch)
    return result.state.model, read_metrics(workdir)


def save_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# Sampling


def make_sampler(denoiser, schedule: diffusion.Schedule, *, parameterization: str, eta: float, clip: float):
    """sample(cond [B,T,M], mask [B,T], start [B,T,M], rng, steps, start_step) -> x0.

    Compiled once per input shape: the step count and start step travel as a `diffusion.ddim_plan`
    (data), so a sweep over step counts does not recompile."""
    graphdef, state = nnx.split(denoiser)

    @jax.jit
    def run(state, cond, mask, start, rng, plan):
        model = nnx.merge(graphdef, state)
        m = mask[..., None].astype(cond.dtype)
        return diffusion.ddim_run(
            lambda x, t: model(x, t, cond, mask),
            schedule,
            start * m,
            plan,
            parameterization=parameterization,
            eta=eta,
            rng=rng,
            mask=m,
            clip=clip,
        )

    def sample(cond, mask, start, rng, steps: int, start_step: int | None = None):
        plan = diffusion.ddim_plan(schedule.num_steps, steps, start_step, length=schedule.num_steps)
        return run(state, cond, mask, start, rng, plan)

    return sample
