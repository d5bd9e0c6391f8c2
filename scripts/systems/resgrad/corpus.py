"""ResGrad's speech corpus: sentences spoken by a Piper voice, with exact per-phoneme durations.

ResGrad (arXiv 2212.14518) and FastSpeech 2 train on LJSpeech with durations from an aligner. We
have neither the recordings nor an aligner offline, so the "ground truth" speaker is a Piper VITS
voice (`voice.PiperVoice`, default: the joe voice): it speaks the built-in LJSpeech transcripts and
reports how many frames it gave each phoneme id, so durations are exact. Its noise is seeded: one
seed gives a byte-identical corpus, whatever the order of the sentences.

Layout (LJSpeech-style, so a user's own folder in this layout also loads):
- `wavs/<id>.wav`: 16-bit PCM mono 22,050 Hz;
- `metadata.csv`: `id|text|text` (LJSpeech's format);
- `phonemes.tsv`: `id<TAB>split<TAB>phonemes<TAB>phoneme ids<TAB>frame durations` (space-separated
  ids and durations, one duration per id, summing to the wav's frame count, len // 256);
- `features.npz` (optional for a user's folder; computed from the wavs when absent): `ids`,
  `offsets` and the concatenated `mel` [frames, 80], `f0` [frames] (Hz, 0 = unvoiced) and `energy`;
- `manifest.json`: settings, counts, seconds of audio, sample rate, licences.

A build goes to `<out_dir>.partial-<pid>` and is renamed into place at the end, so an interrupted
build never leaves a half-written `out_dir`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
import wave
import zipfile
from pathlib import Path

import numpy as np

from frugal.scripts.systems.resgrad import features
from frugal.scripts.systems.resgrad.phonemize import SPLITS, Sentence

SAMPLE_RATE = 22050
HOP = 256
CORPUS_VERSION = 1
LICENCES = {
    "text": "LJSpeech 1.1 transcripts, public domain (keithito.com/LJ-Speech-Dataset), via the Grad-TTS "
    "filelists of github.com/huawei-noah/Speech-Backbones",
    "voice": "Piper voice en_US-joe-medium (github.com/rhasspy/piper; model MIT, joe dataset CC0)",
    "phonemes": "espeak-ng (GPL-3.0-or-later), run once to write sentences.tsv; not needed to build",
}
PHONEMES_TSV_HELP = (
    "one row per utterance: id<TAB>split (train/valid/test)<TAB>phonemes<TAB>space-separated phoneme ids"
    "<TAB>space-separated frame durations (frames of 256 samples per phoneme id, summing to the wav's frames)"
)


@dataclasses.dataclass(frozen=True, eq=False)
class Utterance:
    id: str
    split: str
    text: str
    phonemes: str
    phoneme_ids: np.ndarray  # int32 [P]
    durations: np.ndarray  # int32 [P], frames per phoneme id, sum = T
    mel: np.ndarray  # float32 [T, 80]
    f0: np.ndarray  # float32 [T], Hz, 0 = unvoiced
    energy: np.ndarray  # float32 [T]

    @property
    def frames(self) -> int:
        return int(self.mel.shape[0])


def utterance_seed(seed: int, utterance_id: str) -> int:
    """The voice's noise seed for one utterance: depends only on (seed, id), never on order."""
    digest = hashlib.sha256(f"frugal-resgrad/{seed}/{utterance_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(audio, np.float64) * 32767.0), -32768, 32767).astype("<i2")


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM mono 22,050 Hz wav as float32 in [-1, 1) (errors name the file)."""
    with wave.open(str(path), "rb") as f:
        check_wav_params(path, f.getnchannels(), f.getsampwidth(), f.getframerate())
        data = f.readframes(f.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def check_wav_params(path: Path, channels: int, width: int, rate: int) -> None:
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate} Hz; {SAMPLE_RATE:,} Hz is required (resample it first)")
    if channels != 1 or width != 2:
        raise ValueError(f"{path}: {channels} channel(s) of {8 * width}-bit samples; 16-bit PCM mono is required")


def wav_frames(path: Path) -> int:
    """Mel frames of a wav from its header alone (len // 256), checking its format."""
    try:
        with wave.open(str(path), "rb") as f:
            check_wav_params(path, f.getnchannels(), f.getsampwidth(), f.getframerate())
            return f.getnframes() // HOP
    except wave.Error as exc:
        raise ValueError(f"{path}: not a PCM wav file ({exc})") from exc


def compute_features(audio: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mel": features.log_mel(audio, SAMPLE_RATE),
        "f0": features.pitch(audio, SAMPLE_RATE),
        "energy": features.energy(audio, SAMPLE_RATE),
    }


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def build_corpus(
    out_dir,
    *,
    sentences: list[Sentence],
    seed: int,
    noise_scale: float = 0.667,
    noise_w: float = 0.8,
    length_scale: float = 1.0,
    voice_path=None,
    progress: bool = True,
) -> Path:
    """Synthesizes `sentences` with the Piper voice into `out_dir` (which must not exist); returns it."""
    from frugal.scripts.systems.resgrad.voice import PiperVoice, file_sha256

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; build_corpus writes a new folder (use ensure_corpus to reuse one)")
    if not sentences:
        raise ValueError("sentences is empty; give at least one Sentence")
    ids = [s.id for s in sentences]
    if len(set(ids)) != len(ids):
        raise ValueError(f"sentences repeat ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    for s in sentences:
        if s.split not in SPLITS:
            raise ValueError(f"sentence {s.id!r} has split {s.split!r}; allowed: {SPLITS}")
        if not s.id or any(c in s.id for c in "/\\|\t\n"):
            raise ValueError(f"sentence id {s.id!r} must be non-empty without / \\ | tab or newline")
    for name, value in (("noise_scale", noise_scale), ("noise_w", noise_w)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if length_scale <= 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale}")

    voice = PiperVoice.load(voice_path)
    if voice.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"voice {voice.path} speaks at {voice.sample_rate} Hz; ResGrad's front end needs {SAMPLE_RATE}"
        )
    ordered = sorted(sentences, key=lambda s: s.id)
    partial = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    (partial / "wavs").mkdir(parents=True)
    try:
        rows, feats, seconds, start = [], [], 0.0, time.perf_counter()
        bar = _progress(len(ordered), progress)
        for s in ordered:
            phoneme_ids = voice.phoneme_ids(s.phonemes)
            audio, samples = voice.synthesize(
                phoneme_ids,
                noise_scale=noise_scale,
                length_scale=length_scale,
                noise_w=noise_w,
                seed=utterance_seed(seed, s.id),
            )
            pcm = pcm16(audio)
            write_wav(partial / "wavs" / f"{s.id}.wav", pcm)
            durations = (samples // HOP).astype(np.int32)
            feat = compute_features(pcm.astype(np.float32) / 32768.0)
            if feat["mel"].shape[0] != int(durations.sum()):
                raise RuntimeError(f"{s.id}: {feat['mel'].shape[0]} mel frames but durations sum to {durations.sum()}")
            rows.append((s, phoneme_ids, durations))
            feats.append(feat)
            seconds += len(pcm) / SAMPLE_RATE
            if bar is not None:
                bar.update(1)
                bar.set_postfix(audio_s=f"{seconds:.0f}", rtf=f"{(time.perf_counter() - start) / seconds:.2f}")
        if bar is not None:
            bar.close()
        _write_tables(partial, rows)
        offsets = np.concatenate([[0], np.cumsum([f["mel"].shape[0] for f in feats])]).astype(np.int64)
        save_npz(
            partial / "features.npz",
            {
                "ids": np.array([s.id for s, _, _ in rows]),
                "offsets": offsets,
                **{k: np.concatenate([f[k] for f in feats]).astype(np.float32) for k in ("mel", "f0", "energy")},
            },
        )
        counts = {split: sum(s.split == split for s, _, _ in rows) for split in SPLITS}
        manifest = {
            "format": "frugal-resgrad-corpus",
            "version": CORPUS_VERSION,
            "settings": {
                "seed": seed,
                "noise_scale": noise_scale,
                "noise_w": noise_w,
                "length_scale": length_scale,
                "voice": voice.path.name,
                "voice_sha256": file_sha256(voice.path),
            },
            "counts": counts,
            "utterances": len(rows),
            "frames": int(offsets[-1]),
            "audio_seconds": round(seconds, 3),
            "sample_rate": SAMPLE_RATE,
            "hop": HOP,
            "licences": LICENCES,
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="synthesizing corpus", unit="utt", leave=False)


def _write_tables(folder: Path, rows) -> None:
    with open(folder / "metadata.csv", "w", encoding="utf-8", newline="\n") as f:
        for s, _, _ in rows:
            text = s.text.replace("|", " ")
            f.write(f"{s.id}|{text}|{text}\n")
    with open(folder / "phonemes.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("# id\tsplit\tphonemes\tphoneme ids\tframe durations per id (hop 256 at 22,050 Hz)\n")
        for s, ids, durations in rows:
            f.write(f"{s.id}\t{s.split}\t{s.phonemes}\t{' '.join(map(str, ids))}\t{' '.join(map(str, durations))}\n")


def corpus_key(
    sentences: list[Sentence],
    *,
    seed: int,
    noise_scale: float = 0.667,
    noise_w: float = 0.8,
    length_scale: float = 1.0,
    voice_path=None,
) -> str:
    """A hash of everything that determines a corpus's bytes."""
    from frugal.scripts.systems.resgrad.voice import default_voice_path, file_sha256

    voice = default_voice_path() if voice_path is None else Path(voice_path).expanduser()
    payload = {
        "version": CORPUS_VERSION,
        "seed": seed,
        "noise_scale": noise_scale,
        "noise_w": noise_w,
        "length_scale": length_scale,
        "voice_sha256": file_sha256(voice),
        "sentences": sorted([s.id, s.split, s.text, s.phonemes] for s in sentences),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def corpus_dir(sentences: list[Sentence], *, seed: int, **settings) -> Path:
    """Where `ensure_corpus` keeps this corpus: `<user cache>/frugal/resgrad/corpus-<hash>` (settings, sentences)."""
    from frugal.scripts.data import user_cache_dir

    return user_cache_dir() / "resgrad" / f"corpus-{corpus_key(sentences, seed=seed, **settings)}"


def ensure_corpus(
    sentences: list[Sentence],
    *,
    seed: int,
    noise_scale: float = 0.667,
    noise_w: float = 0.8,
    length_scale: float = 1.0,
    voice_path=None,
    progress: bool = True,
) -> Path:
    """The cached corpus for these settings, built on first use (a finished build is reused)."""
    settings = dict(noise_scale=noise_scale, noise_w=noise_w, length_scale=length_scale, voice_path=voice_path)
    target = corpus_dir(sentences, seed=seed, **settings)
    if (target / "manifest.json").is_file():
        return target
    _remove_stale_partials(target)
    try:
        return build_corpus(target, sentences=sentences, seed=seed, progress=progress, **settings)
    except OSError:
        if (target / "manifest.json").is_file():  # another process finished the same build first
            return target
        raise


def _remove_stale_partials(target: Path) -> None:
    """Deletes `<target>.partial-<pid>` folders of processes that no longer run (killed builds)."""
    if not target.parent.is_dir():
        return
    for folder in target.parent.glob(f"{target.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- loading


def _read_metadata(path: Path) -> list[tuple[int, str, str]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) not in (2, 3):
            raise ValueError(
                f"{path} line {lineno}: {len(cols)} '|'-separated columns; LJSpeech rows are id|text|normalized text"
            )
        rows.append((lineno, cols[0].strip(), cols[-1]))
    return rows


def _read_phonemes(path: Path) -> dict[str, tuple[str, str, np.ndarray, np.ndarray]]:
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise ValueError(
                f"{path} line {lineno}: {len(cols)} tab-separated columns, 5 required ({PHONEMES_TSV_HELP})"
            )
        uid, split, phonemes, ids_text, dur_text = cols
        if split not in SPLITS:
            raise ValueError(f"{path} line {lineno}: split {split!r} is not one of {SPLITS}")
        try:
            ids = np.array(ids_text.split(), dtype=np.int32)
            durations = np.array(dur_text.split(), dtype=np.int32)
        except ValueError as exc:
            raise ValueError(f"{path} line {lineno}: phoneme ids and durations must be integers ({exc})") from exc
        if ids.shape != durations.shape or ids.size == 0:
            raise ValueError(
                f"{path} line {lineno}: {ids.size} phoneme ids but {durations.size} durations; give one duration per id"
            )
        if (durations < 0).any():
            raise ValueError(f"{path} line {lineno}: negative durations")
        table[uid] = (split, phonemes, ids, durations)
    return table


def load_corpus(path) -> dict[str, list[Utterance]]:
    """Our corpus folder, or a user's LJSpeech-style one with `phonemes.tsv`, as utterances by split."""
    root = Path(path)
    metadata = root / "metadata.csv"
    phonemes_path = root / "phonemes.tsv"
    wavs = root / "wavs"
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata} is missing: an LJSpeech-style corpus needs metadata.csv (id|text|text)")
    if not wavs.is_dir():
        raise FileNotFoundError(f"{wavs} is missing: the audio must be wavs/<id>.wav (16-bit PCM mono 22,050 Hz)")
    if not phonemes_path.is_file():
        raise FileNotFoundError(
            f"{phonemes_path} is missing; it must give the durations (frugal has no aligner): {PHONEMES_TSV_HELP}"
        )
    table = _read_phonemes(phonemes_path)
    stored = _load_features(root / "features.npz")
    out: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for lineno, uid, text in _read_metadata(metadata):
        wav = wavs / f"{uid}.wav"
        if not wav.is_file():
            raise FileNotFoundError(f"{metadata} line {lineno}: no wav for id {uid!r} (expected {wav})")
        if uid not in table:
            raise ValueError(f"{phonemes_path} has no row for id {uid!r} ({metadata} line {lineno})")
        split, phonemes, ids, durations = table[uid]
        frames = wav_frames(wav)
        if int(durations.sum()) != frames:
            raise ValueError(
                f"{phonemes_path}: durations of id {uid!r} sum to {int(durations.sum())} frames but {wav} has "
                f"{frames} frames (samples // 256)"
            )
        feat = stored.get(uid) if stored is not None else None
        if feat is None:
            feat = compute_features(read_wav(wav))
        if feat["mel"].shape[0] != frames:
            raise ValueError(f"{root / 'features.npz'}: id {uid!r} has {feat['mel'].shape[0]} frames, the wav {frames}")
        out[split].append(
            Utterance(uid, split, text, phonemes, ids, durations, feat["mel"], feat["f0"], feat["energy"])
        )
    return out


def _load_features(path: Path) -> dict[str, dict[str, np.ndarray]] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        ids, offsets = data["ids"], data["offsets"]
        arrays = {k: data[k] for k in ("mel", "f0", "energy")}
    return {
        str(uid): {k: v[offsets[i] : offsets[i + 1]] for k, v in arrays.items()} for i, uid in enumerate(ids.tolist())
    }
