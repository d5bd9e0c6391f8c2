"""Settings of the hybrid sparse attention experiment: the benchmark (dense vs banded attention, the
Longformer layer vs PyTorch) and the training runs on built-in data (Longformer on the evidence task,
ViL on 32 x 32 images). Flags: `--seq-lens`, `--window`, ... for the benchmark, `--evidence-*` and
`--vil-*` for the two training runs."""

from __future__ import annotations

import dataclasses
from typing import Literal

from frugal.scripts.configs import check_presets, knob

# Token ids of the evidence task: CLS (global, read by the classifier), padding, the marker, then
# one value token per class; the rest of the vocabulary is noise.
CLS, PAD, MARKER, FIRST_VALUE = 0, 1, 2, 3
TASKS = ("evidence", "window_only", "vil")


@dataclasses.dataclass(frozen=True)
class EvidenceTaskConfig:
    """Longformer on the evidence task: the label is the value token after a marker in the second half
    of the sequence, beyond any window of CLS (see `frugal.scripts.systems.attention.tasks`)."""

    seq_len: int = knob(256, "sequence length")
    num_classes: int = knob(4, "value tokens (classes)")
    vocab_size: int = knob(32, "vocabulary (CLS, PAD, marker, values, then noise)")
    num_distractors: int = knob(4, "value tokens placed elsewhere as distractors")
    attention_window: int = knob(16, "Longformer attention window")
    hidden_size: int = knob(64, "hidden size")
    layers: int = knob(2, "encoder layers")
    heads: int = knob(4, "attention heads")
    steps: int = knob(300, "training steps")
    batch_size: int = knob(32, "training batch size")
    learning_rate: float = knob(2e-3, "AdamW learning rate (constant)")
    num_test: int = knob(256, "test sequences")
    use_global: bool = knob(True, "CLS is a global token (the ablation turns it off)", cli=False)
    impl: Literal["banded", "dense", "pallas", "auto"] = knob("banded", "attention implementation")
    seed: int = knob(0, "seed of the model, batches and test set")

    def __post_init__(self):
        if self.attention_window < 1:
            raise ValueError(f"attention_window={self.attention_window} must be >= 1")
        if self.seq_len < 4 * self.attention_window:
            raise ValueError(
                f"seq_len={self.seq_len} must be at least 4 x attention_window={self.attention_window} "
                "so that the evidence can lie outside CLS's window"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes} must be >= 2")
        if self.vocab_size < FIRST_VALUE + self.num_classes + 2:
            raise ValueError(f"vocab_size={self.vocab_size} leaves no noise tokens for {self.num_classes} classes")
        for name in ("steps", "batch_size", "num_test", "hidden_size", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by heads={self.heads}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")


@dataclasses.dataclass(frozen=True)
class ViLTaskConfig:
    """The default two-stage ViL (Vision Longformer) trained on 32 x 32 built-in images."""

    dataset: Literal["digits", "shapes"] = knob("digits", "8x8 digits resized to 32, or the shapes set")
    steps: int = knob(300, "training steps")
    batch_size: int = knob(64, "training batch size")
    learning_rate: float = knob(2e-3, "peak learning rate (warm-up, cosine decay)")
    seed: int = knob(0, "seed of the model and batches")

    def __post_init__(self):
        if self.dataset not in ("digits", "shapes"):
            raise ValueError(f"dataset={self.dataset!r}: use 'digits' or 'shapes'")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """What to measure and train. The benchmark defaults are Longformer-base's attention (window 512,
    12 heads x 64) from 1k to 32k tokens."""

    seq_lens: tuple[int, ...] = knob((1024, 2048, 4096, 8192, 16384, 32768), "sequence lengths of the benchmark")
    window: int = knob(512, "attention window (Longformer convention: inclusive, w/2 keys on each side)")
    num_globals: tuple[int, ...] = knob((1, 64), "global-token counts", flag="globals")
    heads: int = knob(12, "attention heads")
    head_dim: int = knob(64, "head size")
    repeats: int = knob(3, "timed runs per point (minimum reported)")
    dense_memory_limit_gib: float = knob(
        10.0, "run dense only where XLA plans at most this much memory", flag="dense-limit-gib"
    )
    torch: bool = knob(True, "compare the Longformer layer with Hugging Face's PyTorch one (needs the bench extra)")
    torch_seq_lens: tuple[int, ...] = knob((4096, 8192, 16384), "sequence lengths of the PyTorch comparison")
    seed: int = knob(0, "seed of the benchmark inputs and weights")
    tasks: tuple[str, ...] = knob(
        TASKS,
        "training runs: evidence (Longformer, CLS global), window_only (the same without global tokens), "
        "vil (ViL on images); no value: benchmark only",
        choices=TASKS,
        allow_empty=True,
    )
    evidence: EvidenceTaskConfig = EvidenceTaskConfig()
    vil: ViLTaskConfig = ViLTaskConfig()
    workdir: str | None = knob(
        None,
        "checkpoints of the training runs (one folder per run and config): an interrupted run resumes, "
        "a finished one is reused (none: no checkpoints)",
    )
    checkpoint_every: int = knob(0, "training steps between checkpoints (0: only at the end)")
    progress: bool = knob(True, "progress lines and bars")
    outdir: str = knob("reports/attention", "where attention.{json,md,png} go")

    def inactive_fields(self) -> dict[str, str]:
        """Fields the chosen runs never read (`frugal.scripts.configs.check_inactive_flags`)."""
        inactive = {}
        if not self.torch:
            inactive["torch_seq_lens"] = "with --no-torch (no PyTorch comparison runs)"
        if not {"evidence", "window_only"} & set(self.tasks):
            inactive["evidence"] = "unless --tasks names evidence or window_only"
        if "vil" not in self.tasks:
            inactive["vil"] = "unless --tasks names vil"
        if self.workdir is None:
            inactive["checkpoint_every"] = "without --workdir (no checkpoints are written)"
        if not self.tasks:
            inactive["workdir"] = inactive["checkpoint_every"] = "without training runs (--tasks with no value)"
        return inactive

    def __post_init__(self):
        if not self.seq_lens or min(self.seq_lens) < 2:
            raise ValueError(f"seq_lens={self.seq_lens}: give one or more sequence lengths >= 2")
        if self.window <= 0:
            raise ValueError(f"window={self.window} must be positive")
        if not self.num_globals or min(self.num_globals) < 0:
            raise ValueError(f"num_globals={self.num_globals}: give one or more counts >= 0")
        for name in ("heads", "head_dim", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.dense_memory_limit_gib > 0:
            raise ValueError(f"dense_memory_limit_gib={self.dense_memory_limit_gib} must be positive")
        if self.torch_seq_lens and min(self.torch_seq_lens) < 2:
            raise ValueError(f"torch_seq_lens={self.torch_seq_lens}: give sequence lengths >= 2")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"tasks has unknown names {unknown}; choose from {TASKS}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be >= 0")


# The tests' evidence run (the size the evidence assertions were written for); the tour's differs in
# sequence length and steps only.
_QUICK_EVIDENCE = EvidenceTaskConfig(
    seq_len=64,
    attention_window=8,
    hidden_size=32,
    layers=2,
    heads=2,
    steps=100,
    batch_size=32,
    num_test=128,
    learning_rate=3e-3,
)

PRESETS = check_presets(
    AttentionConfig,
    {
        # the tests' size (seconds): a tiny benchmark, the evidence task at n = 64, a short ViL run
        "quick": AttentionConfig(
            seq_lens=(256, 512),
            window=32,
            num_globals=(1,),
            heads=2,
            head_dim=16,
            repeats=1,
            torch=False,
            torch_seq_lens=(512,),
            evidence=_QUICK_EVIDENCE,
            vil=ViLTaskConfig(steps=60, batch_size=32),
            progress=False,
        ),
        # the tour's section: n 512 and 2048 (torch's import alone costs seconds: left to --full), and
        # the evidence task at n = 128
        "tour": AttentionConfig(
            seq_lens=(512, 2048),
            window=128,
            num_globals=(1,),
            heads=4,
            repeats=1,
            torch=False,
            torch_seq_lens=(1024,),
            tasks=("evidence",),
            evidence=dataclasses.replace(_QUICK_EVIDENCE, seq_len=128, steps=120),
            progress=False,
        ),
        "full": AttentionConfig(),
    },
)
