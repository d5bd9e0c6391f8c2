"""Settings of `frugal skim` (flags derived from these fields by `frugal.scripts.configs`).

`quick` is the tests' size (seconds, numbers meaningless), `tour` the `frugal tour` section (a real
fine-tune on short windows, about a minute on a 2-core CPU), `full` the command's default (the
measured table in this folder's README). `train_steps` and `refine_epochs` are None (auto) in `full`:
read the resolved `config.steps` / `config.refine` (the extended predictors: 100 and 20; the paper's
`diagonal`: PAPER_TRAIN_STEPS and 0).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.configs import check_presets, knob
from frugal.scripts.data import cache_folder
from frugal.transforms.block_skim import LABEL_RULES, PREDICTOR_FEATURES

# Joint fine-tuning steps of the paper's training (`--predictor-features diagonal`, train_steps auto): the
# paper trains its predictor through the joint loss alone, so the run is long enough for the skim loss to
# settle (see `evaluation.skim_loss_curve`); the extended predictors keep EXTENDED_TRAIN_STEPS and a refit.
PAPER_TRAIN_STEPS = 600
EXTENDED_TRAIN_STEPS = 100
EXTENDED_REFINE_EPOCHS = 20


@dataclasses.dataclass(frozen=True)
class SkimConfig:
    """One Block-Skim experiment on all-MiniLM-L6-v2: data, joint fine-tune, predictors, evaluation."""

    # The built-in set (`qa_data.make_fact_qa`): by default one answer fact among real filler sentences, in
    # passages that fill MiniLM's 512 positions. `distractors=3` adds look-alike facts (the harder set, measured
    # with max_seq_len=384, context_tokens=(300, 360)).
    n_train: int = knob(3000, "built-in training examples")
    n_dev: int = knob(200, "built-in dev examples")
    distractors: int = knob(
        0,
        "look-alike facts per built-in passage besides the answer fact (0: the answer fact among real filler "
        "sentences; 3: the harder set, with same-relation/other-subject and same-subject/other-relation facts)",
    )
    max_seq_len: int = knob(512, "window length in tokens, a multiple of 32 in [64, 512]")
    doc_stride: int = knob(128, "context tokens between the starts of consecutive windows of one passage")
    context_tokens: tuple[int, ...] = knob((440, 490), "built-in passage length range LO HI in WordPiece tokens")
    # Joint fine-tune (a Trainer run; its workdir in cache_dir is the weight cache).
    train_steps: int | None = knob(
        None,
        f"fine-tuning steps per model (none: auto, {EXTENDED_TRAIN_STEPS} with the extended predictors, "
        f"{PAPER_TRAIN_STEPS} with --predictor-features diagonal, the paper's joint-only training)",
    )
    batch_size: int = knob(8, "fine-tuning batch")
    learning_rate: float = knob(1.5e-4, "peak learning rate of the encoder and span head (AdamW)")
    predictor_learning_rate: float = knob(1e-3, "peak learning rate of the skim predictors in the joint fine-tune")
    warmup_fraction: float = knob(0.1, "share of the fine-tuning steps spent on linear warm-up (then cosine decay)")
    freeze_embeddings: bool = knob(True, "keep the embedding layer frozen (not differentiated)")
    predictor_layers: tuple[int, ...] = knob((0, 1, 2, 3, 4), "layers that get a trained skim predictor")
    prune_layers: tuple[int, ...] = knob((0,), "predictor layers used to prune at inference")
    thresholds: tuple[float, ...] = knob((0.0, 0.01, 0.1, 0.5), "keep thresholds swept at inference, in [0, 1]")
    alpha: float = knob(0.1, "weight of the skim loss in the joint loss")
    beta: float = knob(20.0, "class weight of the keep class in the skim loss")
    label_rule: str = knob(
        "any", "block label: any answer token, or the reference's more-than-one rule", choices=LABEL_RULES
    )
    train_vanilla: bool = knob(True, "also fine-tune a vanilla model (plain QA loss) for comparison", flag="vanilla")
    diagnostics: bool = knob(True, "report per-layer predictor kept fraction and answer-block recall")
    # Predictor-only refinement on cached attention (encoder frozen) after the joint fine-tune.
    refine_epochs: int | None = knob(
        None,
        "predictor-only epochs on cached attention after the joint fine-tune (0: none; none: auto, "
        f"{EXTENDED_REFINE_EPOCHS} with the extended predictors, 0 with --predictor-features diagonal, whose "
        "predictor the paper trains through the joint loss alone)",
    )
    refine_windows: int = knob(600, "training windows whose attention the refinement caches")
    refine_learning_rate: float = knob(2e-3, "peak learning rate of the refinement")
    refine_layers: tuple[int, ...] = knob((0, 1), "predictors the refinement retrains (among predictor_layers)")
    # Our extensions (see frugal.transforms.block_skim.BlockSkimConfig.predictor_features).
    predictor_features: str = knob(
        "diagonal+question+match",
        "skim predictor input: the paper's diagonal blocks alone, or (our extensions) plus question<->block "
        "attention features, or plus those and hidden-state question matching with an MLP head; the extensions "
        "get per-layer thresholds picked on held-out training windows, and the paper's predictor is swept "
        "beside the match one",
        choices=PREDICTOR_FEATURES,
    )
    question_layers: tuple[int, ...] = knob(
        (0,), "layers whose extended predictors are fitted; must cover prune_layers"
    )
    question_fit_windows: int = knob(2600, "training windows the extended predictors are fitted on", flag="fit-windows")
    question_fit_steps: int = knob(400, "full-batch steps of the 'diagonal+question' classifier fit")
    match_fit_steps: int = knob(300, "full-batch steps of the match-head fit (the MLPs overfit with many more)")
    match_learning_rate: float = knob(1e-2, "peak learning rate of the match-head and classifier fits")
    paper_thresholds: tuple[float, ...] = knob(
        (0.1, 0.3, 0.5),
        "with the match predictor: thresholds of the paper's predictor swept beside it",
        allow_empty=True,
    )
    selection_windows: int = knob(400, "held-out training windows the per-layer thresholds are picked on")
    target_recall: float = knob(
        1.0, "answer-block recall the per-layer thresholds keep on the held-out training windows, in (0, 1]"
    )
    # Evaluation and timing.
    eval_batch_size: int = knob(16, "windows per evaluation batch")
    eval_bucket_blocks: int = knob(
        1,
        "batched evaluation pads each stage's kept blocks up to a multiple of this many (fewer shapes to compile; "
        "answers unchanged, FLOPs count only the kept blocks; batch-1 timing never pads)",
    )
    timing_examples: int = knob(30, "dev windows timed at batch 1 (0: no timing)")
    timing_repeats: int = knob(3, "timed passes per window (each window's fastest counts)")
    lock_timeout_s: float | None = knob(
        None, "seconds to wait for the benchmark lock before timing without it (none: wait)"
    )
    lower_priority: bool = knob(True, "train and sweep at nice 19 (timing keeps its priority when weights are cached)")
    seed: int = knob(0, "random seed of the data, the model heads and the batch order")
    cache_dir: str | None = knob(
        "auto",
        "where the Trainer workdirs (fine-tunes, fitted predictors) are kept, named by recipe; a finished one is "
        "restored instead of trained (auto: $XDG_CACHE_HOME/frugal/skim or ~/.cache/frugal/skim; none: no cache)",
    )
    outdir: str = knob("reports/skim", "where skim[_LABEL].{json,md,png} go")
    label: str = knob("full", "report name and title (files are skim_LABEL.*, plain skim.* for full)", cli=False)
    progress: bool = knob(True, "show progress bars")

    @property
    def paper_training(self) -> bool:
        """Whether the paper's predictor alone prunes, trained the paper's way (joint loss only, no refit)."""
        return self.predictor_features == "diagonal"

    @property
    def steps(self) -> int:
        """The joint fine-tune's steps: `train_steps`, or when auto (None) PAPER_TRAIN_STEPS with
        `diagonal` and EXTENDED_TRAIN_STEPS with the extended predictors. Read this, not `train_steps`."""
        if self.train_steps is not None:
            return self.train_steps
        return PAPER_TRAIN_STEPS if self.paper_training else EXTENDED_TRAIN_STEPS

    @property
    def refine(self) -> int:
        """The refinement's epochs: `refine_epochs`, or when auto (None) 0 with `diagonal` and
        EXTENDED_REFINE_EPOCHS with the extended predictors. Read this, not `refine_epochs`."""
        if self.refine_epochs is not None:
            return self.refine_epochs
        return 0 if self.paper_training else EXTENDED_REFINE_EPOCHS

    def resolved(self) -> dict:
        """The fields as a dict with `train_steps` and `refine_epochs` resolved (the JSON's `config`)."""
        return {**dataclasses.asdict(self), "train_steps": self.steps, "refine_epochs": self.refine}

    def inactive_fields(self) -> dict[str, str]:
        """Fields these settings never read (`frugal.scripts.configs.check_inactive_flags`)."""
        inactive = {}
        if self.refine == 0:
            why = (
                "with --refine-epochs 0 (no refinement)"
                if self.refine_epochs == 0
                else "with --predictor-features diagonal (the paper's training: no refinement unless --refine-epochs N)"
            )
            for name in ("refine_windows", "refine_learning_rate", "refine_layers"):
                inactive[name] = why
        if self.timing_examples == 0:
            inactive["timing_repeats"] = "with --timing-examples 0 (no timing)"
        return inactive

    def __post_init__(self):
        for name in ("n_train", "n_dev", "train_steps", "batch_size", "eval_batch_size", "doc_stride"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("distractors", "timing_examples", "refine_epochs", "question_fit_steps", "match_fit_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.eval_bucket_blocks < 1:
            raise ValueError(f"eval_bucket_blocks={self.eval_bucket_blocks} must be >= 1")
        if self.timing_repeats < 1:
            raise ValueError(f"timing_repeats={self.timing_repeats} must be >= 1")
        for name in ("refine_windows", "question_fit_windows", "selection_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_seq_len % 32 or not 64 <= self.max_seq_len <= 512:
            raise ValueError(f"max_seq_len={self.max_seq_len} must be a multiple of 32 in [64, 512]")
        if len(self.context_tokens) != 2 or not 16 <= self.context_tokens[0] <= self.context_tokens[1]:
            raise ValueError(f"context_tokens={self.context_tokens} must be two token counts LO HI with 16 <= LO <= HI")
        for name in ("learning_rate", "predictor_learning_rate", "refine_learning_rate", "match_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        if not self.predictor_layers or any(i < 0 for i in self.predictor_layers):
            raise ValueError(f"predictor_layers={self.predictor_layers} must be one or more layer indices >= 0")
        if not self.prune_layers or not set(self.prune_layers) <= set(self.predictor_layers):
            raise ValueError(
                f"prune_layers={self.prune_layers} must be a non-empty subset of "
                f"predictor_layers={self.predictor_layers}"
            )
        if self.label_rule not in LABEL_RULES:
            raise ValueError(f"label_rule={self.label_rule!r} must be one of {LABEL_RULES}")
        if self.predictor_features not in PREDICTOR_FEATURES:
            raise ValueError(f"predictor_features={self.predictor_features!r} must be one of {PREDICTOR_FEATURES}")
        if self.predictor_features == "diagonal+question+match" and not set(self.prune_layers) <= set(
            self.question_layers
        ):
            raise ValueError(
                f"prune_layers={self.prune_layers} must be among question_layers={self.question_layers}: "
                "only those match heads are fitted"
            )
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall={self.target_recall} must be in (0, 1]")
        if not self.thresholds or any(not 0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds={self.thresholds} must be one or more values in [0, 1]")
        if any(not 0 <= t <= 1 for t in self.paper_thresholds):
            raise ValueError(f"paper_thresholds={self.paper_thresholds} must be values in [0, 1]")
        if self.lock_timeout_s is not None and self.lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s={self.lock_timeout_s} must be >= 0 (or none)")

    def cache_root(self) -> Path | None:
        """The folder of this run's Trainer workdirs (None: nothing is cached)."""
        return cache_folder(self.cache_dir, "skim")


PRESETS = check_presets(
    SkimConfig,
    {
        # the tests' size: two steps on 128-token windows, every stage of the pipeline, nothing cached
        "quick": SkimConfig(
            n_train=40,
            n_dev=6,
            max_seq_len=128,
            context_tokens=(90, 110),
            train_steps=2,
            batch_size=4,
            predictor_layers=(0,),
            refine_layers=(0,),
            refine_epochs=1,
            refine_windows=8,
            question_fit_windows=20,
            selection_windows=10,
            match_fit_steps=20,
            thresholds=(0.0, 0.5),
            paper_thresholds=(0.5,),
            train_vanilla=False,
            timing_examples=2,
            timing_repeats=1,
            eval_batch_size=8,
            lock_timeout_s=1.0,
            cache_dir=None,
            label="quick",
            progress=False,
            lower_priority=False,
        ),
        # the tour's section: a real fine-tune on 256-token windows (8 blocks), pruning after layer 0 by the
        # match predictor fitted on a few hundred windows; see the README for what it measures
        "tour": SkimConfig(
            n_train=500,
            n_dev=60,
            max_seq_len=256,
            context_tokens=(228, 240),  # windows of 8 blocks: one compiled shape per batch-1 stage
            train_steps=24,
            batch_size=4,
            learning_rate=4e-4,
            predictor_layers=(0,),
            refine_epochs=0,
            refine_layers=(0,),
            question_fit_windows=240,
            selection_windows=60,
            match_fit_steps=100,
            target_recall=0.99,
            thresholds=(0.01,),
            paper_thresholds=(),
            train_vanilla=False,
            diagnostics=False,
            timing_examples=4,
            timing_repeats=1,
            eval_batch_size=10,
            eval_bucket_blocks=2,
            lock_timeout_s=5.0,
            label="tour",
            progress=False,
            lower_priority=False,
        ),
        "full": SkimConfig(),
    },
)
