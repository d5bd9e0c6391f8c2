"""Training the hybrid-attention models on built-in data, both through `frugal.scripts.harness.Trainer`.

* Longformer (arXiv 2004.05150) on the *evidence* task, a long-sequence problem that needs both parts
  of the pattern: each sequence is noise tokens with a marker token somewhere in its second half,
  followed by a value token; the label is that value. Value tokens also appear elsewhere as
  distractors, so a reader must find the value that *follows the marker* (a local, windowed question)
  and bring it to the CLS token at position 0, far outside any window (a global question). The model
  classifies from CLS, which is a global token; the ablation without global tokens stays at chance.
  Step `s`'s batch is drawn from a generator seeded by (seed, s), so a resumed run sees the same
  batches as an uninterrupted one.
* ViL (Vision Longformer, arXiv 2103.15358) on the built-in digits images (32 x 32) through
  `frugal.scripts.harness.fit_classifier`.

Both log the loss of every step (`log_every=1`); with a `workdir` they checkpoint, resume, and reuse a
finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import optax
from flax import nnx

from frugal.scripts.systems.attention.config import (
    CLS,
    FIRST_VALUE,
    MARKER,
    PAD,
    AttentionConfig,
    EvidenceTaskConfig,
    ViLTaskConfig,
)

# Seed streams of the evidence task: training step s draws from (seed, TRAIN_STREAM, s), the test
# set from (seed, TEST_STREAM).
TRAIN_STREAM, TEST_STREAM = 0, 1


def make_evidence_batch(rng: np.random.Generator, batch: int, config: EvidenceTaskConfig):
    """(ids (batch, seq) int32, labels (batch,) int32) for the evidence task."""
    n, c = config.seq_len, config.num_classes
    noise_lo = FIRST_VALUE + c
    ids = rng.integers(noise_lo, config.vocab_size, size=(batch, n))
    ids[:, 0] = CLS
    labels = rng.integers(0, c, size=batch)
    half = config.attention_window  # keep the evidence beyond CLS's one-sided window
    for row in range(batch):
        where = rng.integers(max(n // 2, half + 1), n - 1)
        ids[row, where], ids[row, where + 1] = MARKER, FIRST_VALUE + labels[row]
        taken = {where, where + 1}
        for _ in range(config.num_distractors):
            spot = int(rng.integers(1, n))
            if spot in taken or spot - 1 == where or ids[row, spot - 1] == MARKER:
                continue
            ids[row, spot] = FIRST_VALUE + rng.integers(0, c)
    return ids.astype(np.int32), labels.astype(np.int32)


def evidence_batch(config: EvidenceTaskConfig, step: int):
    """Training batch of step `step`: a function of (seed, step) only."""
    return make_evidence_batch(np.random.default_rng([config.seed, TRAIN_STREAM, step]), config.batch_size, config)


def evidence_test_set(config: EvidenceTaskConfig):
    return make_evidence_batch(np.random.default_rng([config.seed, TEST_STREAM]), config.num_test, config)


class EvidenceReader(nnx.Module):
    """A LongformerClassifier with its attention pattern fixed: token ids in, class logits out, the
    interface `harness.classification_step` and `harness.evaluate_classifier` train and score."""

    def __init__(self, config: EvidenceTaskConfig):
        from frugal.models.longformer import LongformerClassifier, LongformerConfig

        model_config = LongformerConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=2 * config.hidden_size,
            max_position_embeddings=config.seq_len + 2 + 1,
            attention_window=config.attention_window,
            pad_token_id=PAD,
        )
        self.classifier = LongformerClassifier(model_config, config.num_classes, rngs=nnx.Rngs(config.seed))
        self.global_tokens = (CLS,) if config.use_global else ()
        self.impl = config.impl

    def __call__(self, ids):
        return self.classifier(ids, global_tokens=self.global_tokens, impl=self.impl)


def run_dir(workdir: str | Path | None, name: str, config) -> Path | None:
    """`workdir/<name>-<hash of the config>`: a changed config never reuses another run's checkpoints."""
    if workdir is None:
        return None
    digest = hashlib.sha1(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()[:10]
    return Path(workdir) / f"{name}-{digest}"


def loss_curve(history: list[dict], workdir: Path | None) -> list[float]:
    """Per-step training losses: from `metrics.jsonl` when the run has a workdir (so a resumed or
    reused run still has its whole curve), else from the history of this call."""
    records = history
    if workdir is not None and (workdir / "metrics.jsonl").exists():
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [float(r["loss"]) for r in sorted(records, key=lambda r: r["step"]) if "loss" in r]


def _curve_summary(losses: list[float], steps: int) -> dict:
    window = max(1, steps // 10)
    return {
        "first_loss": float(np.mean(losses[:window])) if losses else None,
        "last_loss": float(np.mean(losses[-window:])) if losses else None,
        "loss_curve": losses[:: max(1, steps // 50)],
    }


def train_longformer_evidence(
    config: EvidenceTaskConfig,
    *,
    workdir: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool = False,
) -> dict:
    """Trains a small Longformer classifier on the evidence task; returns losses and test accuracy."""
    from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, classification_step, evaluate_classifier

    name = "evidence_global" if config.use_global else "evidence_window_only"
    directory = run_dir(workdir, name, config)
    state = TrainState(EvidenceReader(config), optax.adamw(config.learning_rate, weight_decay=1e-4))
    trainer = Trainer(
        state,
        classification_step(),  # reads the token ids from the batch's "image" entry
        config=TrainerConfig(
            num_steps=config.steps,
            seed=config.seed,
            checkpoint_every=checkpoint_every,
            log_every=1,
            progress=progress,
            progress_label=f"longformer evidence (global={config.use_global})",
        ),
        workdir=directory,
    )

    def batch_at(step: int, rows: slice):
        ids, labels = evidence_batch(config, step)
        return {"image": ids[rows], "label": labels[rows]}

    result = trainer.run(batch_at, config.batch_size)
    test_ids, test_labels = evidence_test_set(config)
    test = evaluate_classifier(result.state.model, test_ids, test_labels)
    return {
        "use_global": config.use_global,
        "seq_len": config.seq_len,
        "steps": config.steps,
        "test_accuracy": test["accuracy"],
        "chance": 1.0 / config.num_classes,
        "seconds": result.seconds,
        "resumed_from": result.start_step,
        **_curve_summary(loss_curve(result.history, directory), config.steps),
    }


def train_vil(
    config: ViLTaskConfig, *, workdir: str | Path | None = None, checkpoint_every: int = 0, progress: bool = False
) -> dict:
    """Trains the default two-stage ViL on 32 x 32 built-in images; returns test accuracy and losses."""
    from frugal.models.vil import ViL, ViLConfig
    from frugal.scripts.data import load_digits, make_shapes_dataset
    from frugal.scripts.harness import fit_classifier

    if config.dataset == "digits":
        data = load_digits(image_size=32, seed=config.seed)
    else:
        data = make_shapes_dataset(2000, 500, seed=config.seed)
    model = ViL(ViLConfig(in_channels=data.image_shape[-1], num_classes=data.num_classes), rngs=nnx.Rngs(config.seed))
    directory = run_dir(workdir, "vil", config)
    result = fit_classifier(
        model,
        data,
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        progress=progress,
        log_every=1,
        checkpoint_every=checkpoint_every,
        workdir=directory,
    )
    return {
        "dataset": data.name,
        "steps": config.steps,
        "test_accuracy": result.test_accuracy,
        "chance": 1.0 / data.num_classes,
        "seconds": result.seconds,
        "resumed_from": result.resumed_from,
        **_curve_summary(loss_curve(result.history, directory), config.steps),
    }


def run_tasks(config: AttentionConfig) -> dict:
    """The training runs `config.tasks` names: Longformer on the evidence task with and without the
    global CLS, ViL on images."""
    kwargs = {"workdir": config.workdir, "checkpoint_every": config.checkpoint_every, "progress": config.progress}
    figures: dict = {}
    runs = [("evidence", True), ("window_only", False)]
    evidence = [
        train_longformer_evidence(dataclasses.replace(config.evidence, use_global=use_global), **kwargs)
        for task, use_global in runs
        if task in config.tasks
    ]
    if evidence:
        figures["longformer_evidence"] = evidence
    if "vil" in config.tasks:
        figures["vil"] = train_vil(config.vil, **kwargs)
    return figures


def tasks_table(figures: dict) -> tuple[list[str], list[list]]:
    rows = [
        [
            f"Longformer, evidence task n={r['seq_len']}",
            "CLS global" if r["use_global"] else "window only",
            r["steps"],
            r["first_loss"],
            r["last_loss"],
            r["test_accuracy"],
            r["chance"],
        ]
        for r in figures.get("longformer_evidence", [])
    ]
    if "vil" in figures:
        v = figures["vil"]
        rows.append(
            [
                f"ViL on {v['dataset']} 32x32",
                "2-D window + 1 global",
                v["steps"],
                v["first_loss"],
                v["last_loss"],
                v["test_accuracy"],
                v["chance"],
            ]
        )
    return ["model / task", "pattern", "steps", "first loss", "last loss", "test acc", "chance"], rows


__all__ = [
    "EvidenceReader",
    "evidence_batch",
    "evidence_test_set",
    "make_evidence_batch",
    "run_tasks",
    "tasks_table",
    "train_longformer_evidence",
    "train_vil",
]
