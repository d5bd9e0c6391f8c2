"""Settings of `frugal tts corpus | train | eval | synthesize` (flags derived from these fields by
`frugal.scripts.configs`).

`quick` is the tests' size (a handful of utterances, tens of steps: numbers meaningless), `tour` the
`frugal tour` section (smoke level: the pipeline end to end in about a minute), `full` the command's
default and the table in this folder's README: 500 LJSpeech sentences spoken by the Piper joe voice
(about an hour of speech), FastSpeech 2 at the CPU size, WaveNet denoisers of 2.4M parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from frugal.scripts.configs import check_presets, knob

VOCODERS = ("hifigan-universal", "hifigan-ljspeech", "griffin-lim")


@dataclasses.dataclass(frozen=True)
class ResGradConfig:
    """One ResGrad comparison: a corpus, a frozen FastSpeech 2, and three refiners of one size."""

    # corpus
    corpus_dir: str | None = knob(
        None, "your LJSpeech-style folder (metadata.csv, wavs/, phonemes.tsv) instead of the built-in corpus"
    )
    train_sentences: int = knob(500, "built-in corpus: training sentences (LJSpeech transcripts, up to 1,400)")
    test_sentences: int = knob(32, "built-in corpus: held-out sentences (LJSpeech's Grad-TTS test list, up to 200)")
    corpus_seed: int = knob(0, "seed of the voice's noise (the corpus is byte-identical for a seed)")
    noise_scale: float = knob(0.667, "the voice's spectral noise: 0 makes the target deterministic at fixed timing")
    noise_w: float = knob(0.8, "the voice's duration noise")
    noise_scales: tuple[float, ...] = knob((0.0, 0.667), "sweep: the voice noise scales compared, one corpus each")
    # FastSpeech 2
    fs2_size: Literal["tiny", "cpu", "paper"] = knob(
        "cpu",
        "tiny: d32, 1+1 layers (tests); cpu: d128, 3+3, conv 512; paper: ming024's d256, 4+6, conv 1024, postnet",
        choices=("tiny", "cpu", "paper"),
    )
    fs2_steps: int = knob(800, "FastSpeech 2 training steps")
    fs2_batch: int = knob(16, "FastSpeech 2 utterances per batch")
    fs2_lr: float = knob(1e-3, "FastSpeech 2 peak learning rate (warm-up then cosine decay)")
    fs2_buckets: int = knob(4, "FastSpeech 2 trains on utterances grouped into this many length buckets (shapes)")
    # refiners
    denoiser: Literal["wavenet", "unet"] = knob(
        "wavenet",
        "wavenet: DiffSpeech's 1-D WaveNet; unet: Grad-TTS's 2-D U-Net (no attention)",
        choices=("wavenet", "unet"),
    )
    channels: int = knob(128, "wavenet: residual channels; unet: base channels")
    layers: int = knob(12, "wavenet: residual layers")
    diffusion_steps: int = knob(100, "T, the training chain's length")
    schedule: Literal["linear", "cosine"] = knob("linear", "noise schedule", choices=("linear", "cosine"))
    parameterization: Literal["eps", "x0"] = knob(
        "x0",
        "what the denoiser predicts: the clean target (ProDiff's choice for few steps) or the noise (DDPM)",
        choices=("eps", "x0"),
    )
    loss: Literal["l1", "l2"] = knob("l1", "denoising loss (DiffSpeech uses L1)", choices=("l1", "l2"))
    denoiser_steps: int = knob(2000, "training steps of each refiner")
    denoiser_batch: int = knob(16, "segments per refiner batch")
    segment_frames: int = knob(128, "frames per training segment")
    denoiser_lr: float = knob(5e-4, "refiner peak learning rate")
    # evaluation
    conditions: tuple[str, ...] = knob(
        ("aligned", "tts"),
        "aligned: FastSpeech 2 given the recording's durations/pitch/energy (frame-aligned MCD); "
        "tts: everything predicted (MCD along a DTW path)",
        choices=("aligned", "tts"),
    )
    sample_steps: tuple[int, ...] = knob((1, 2, 4, 8, 16, 32, 64), "DDIM step counts evaluated for every refiner")
    resgrad_steps: int = knob(
        4, "ResGrad's few-step budget: the claims consider ResGrad at up to this many steps; audio uses it"
    )
    shallow_k: int = knob(30, "shallow diffusion starts from FastSpeech 2's mel noised to this step")
    eta: float = knob(0.0, "DDIM eta: 0 deterministic, 1 DDPM-like")
    clip: float = knob(8.0, "DDIM clips each clean estimate to +-clip (normalized units, ~standard deviations)")
    rtf_utterances: int = knob(4, "held-out utterances timed for the real-time factor (batch 1, warm)")
    vocoder: Literal["hifigan-universal", "hifigan-ljspeech", "griffin-lim"] = knob(
        "hifigan-universal", "vocoder for audio, F0 and DNSMOS", choices=VOCODERS
    )
    vocoded_utterances: int = knob(12, "held-out utterances vocoded for F0 error and DNSMOS")
    dnsmos: bool = knob(True, "score vocoded held-out audio with DNSMOS (a weak proxy of MOS)")
    audio_examples: int = knob(2, "held-out utterances written as wav files and spectrogram panels")
    seed: int = knob(0, "seed of initialization, batches and sampling noise")
    outdir: str = knob("reports/resgrad", "where reports, plots and audio go")
    progress: bool = knob(True, "progress bars and stage messages")
    # synthesize
    text: str = knob("", "synthesize: the text to speak (needs the espeak extra for new text)")
    out: str = knob("resgrad.wav", "synthesize: the wav file to write")

    def __post_init__(self):
        positive = (
            "train_sentences",
            "test_sentences",
            "fs2_steps",
            "fs2_batch",
            "fs2_buckets",
            "channels",
            "layers",
            "diffusion_steps",
            "denoiser_steps",
            "denoiser_batch",
            "resgrad_steps",
            "rtf_utterances",
            "vocoded_utterances",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_sentences > 1400:
            raise ValueError(f"train_sentences must be <= 1400 (the built-in list), got {self.train_sentences}")
        if self.test_sentences > 200:
            raise ValueError(f"test_sentences must be <= 200 (the built-in list), got {self.test_sentences}")
        if self.noise_scale < 0 or self.noise_w < 0:
            raise ValueError(f"noise_scale and noise_w must be >= 0, got {self.noise_scale}, {self.noise_w}")
        if not self.noise_scales or any(not s >= 0 for s in self.noise_scales):
            raise ValueError(f"noise_scales must be one or more scales >= 0, got {self.noise_scales}")
        if self.segment_frames < 16 or self.segment_frames % 16:
            raise ValueError(f"segment_frames must be a positive multiple of 16, got {self.segment_frames}")
        if not self.sample_steps or any(not 1 <= s <= self.diffusion_steps for s in self.sample_steps):
            raise ValueError(
                f"sample_steps must be step counts in [1, diffusion_steps={self.diffusion_steps}], "
                f"got {self.sample_steps}"
            )
        if not self.conditions or len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions must name 'aligned' and/or 'tts' once each, got {self.conditions}")
        if self.resgrad_steps not in self.sample_steps:
            raise ValueError(f"resgrad_steps={self.resgrad_steps} must be one of sample_steps {self.sample_steps}")
        if not 1 <= self.shallow_k < self.diffusion_steps:
            raise ValueError(f"shallow_k must be in [1, diffusion_steps={self.diffusion_steps}), got {self.shallow_k}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        if self.audio_examples < 0:
            raise ValueError(f"audio_examples must be >= 0, got {self.audio_examples}")
        for name in ("fs2_lr", "denoiser_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


PRESETS = check_presets(
    ResGradConfig,
    {
        "quick": ResGradConfig(
            train_sentences=6,
            test_sentences=2,
            fs2_size="tiny",
            fs2_steps=4,
            fs2_batch=2,
            fs2_buckets=1,
            channels=16,
            layers=2,
            diffusion_steps=25,
            denoiser_steps=4,
            denoiser_batch=2,
            segment_frames=32,
            conditions=("tts",),
            sample_steps=(1, 2),
            resgrad_steps=2,
            shallow_k=5,
            rtf_utterances=1,
            vocoder="griffin-lim",
            dnsmos=False,
            audio_examples=1,
            progress=False,
        ),
        "tour": ResGradConfig(
            train_sentences=12,
            test_sentences=2,
            fs2_size="tiny",
            fs2_steps=60,
            fs2_batch=8,
            fs2_buckets=1,
            channels=32,
            layers=4,
            diffusion_steps=50,
            denoiser_steps=60,
            denoiser_batch=8,
            segment_frames=64,
            conditions=("aligned",),
            sample_steps=(1, 2, 4),
            resgrad_steps=2,
            shallow_k=15,
            rtf_utterances=1,
            vocoder="griffin-lim",
            audio_examples=1,
            dnsmos=False,
        ),
        "full": ResGradConfig(),
    },
)
