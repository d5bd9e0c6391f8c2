"""Training the hybrid-attention models on built-in data.

* Longformer on the *evidence* task, a long-sequence problem that needs both parts of the pattern:
  each sequence is noise tokens with a marker token somewhere in its second half, followed by a value
  token; the label is that value. Value tokens also appear elsewhere as distractors, so a reader must
  find the value that *follows the marker* (a local, windowed question) and bring it to the CLS token
  at position 0, far outside any window (a global question). The model classifies from CLS, which is
  a global token; the ablation without global tokens must stay at chance.
* ViL (Vision Longformer) on the built-in digits images (32 x 32) through `frugal.scripts.harness.fit_classifier`.
"""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

CLS, PAD, MARKER, FIRST_VALUE = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class EvidenceTaskConfig:
    seq_len: int = 256
    num_classes: int = 4
    vocab_size: int = 32
    num_distractors: int = 4
    attention_window: int = 16
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    num_test: int = 256
    use_global: bool = True
    impl: str = "banded"
    seed: int = 0

    def __post_init__(self):
        if self.seq_len < 4 * self.attention_window:
            raise ValueError(
                f"seq_len={self.seq_len} must be at least 4 x attention_window={self.attention_window} "
                "so that the evidence can lie outside CLS's window"
            )
        if self.vocab_size < FIRST_VALUE + self.num_classes + 2:
            raise ValueError(f"vocab_size={self.vocab_size} leaves no noise tokens for {self.num_classes} classes")
        if self.steps < 1 or self.batch_size < 1 or self.num_test < 1:
            raise ValueError("steps, batch_size and num_test must be >= 1")


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


def train_longformer_evidence(config: EvidenceTaskConfig, progress: bool = False) -> dict:
    """Trains a small LongformerClassifier on the evidence task; returns losses and test accuracy."""
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
    model = LongformerClassifier(model_config, config.num_classes, rngs=nnx.Rngs(config.seed))
    optimizer = nnx.Optimizer(model, optax.adamw(config.learning_rate, weight_decay=1e-4), wrt=nnx.Param)
    global_tokens = (0,) if config.use_global else ()

    @nnx.jit
    def step(model, optimizer, ids, labels):
        def loss_fn(model):
            logits = model(ids, global_tokens=global_tokens, impl=config.impl)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    @nnx.jit
    def predict(model, ids):
        return jnp.argmax(model(ids, global_tokens=global_tokens, impl=config.impl), -1)

    rng = np.random.default_rng(config.seed)
    test_ids, test_labels = make_evidence_batch(np.random.default_rng(config.seed + 10_000), config.num_test, config)
    losses, accuracies = [], []
    start = time.perf_counter()
    iterator = range(config.steps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"longformer evidence (global={config.use_global})")
    for _ in iterator:
        ids, labels = make_evidence_batch(rng, config.batch_size, config)
        loss, acc = step(model, optimizer, jnp.asarray(ids), jnp.asarray(labels))
        losses.append(float(loss))
        accuracies.append(float(acc))
    seconds = time.perf_counter() - start
    test_accuracy = float(np.mean(np.asarray(predict(model, jnp.asarray(test_ids))) == test_labels))
    window = max(1, config.steps // 10)
    return {
        "use_global": config.use_global,
        "seq_len": config.seq_len,
        "steps": config.steps,
        "first_loss": float(np.mean(losses[:window])),
        "last_loss": float(np.mean(losses[-window:])),
        "test_accuracy": test_accuracy,
        "chance": 1.0 / config.num_classes,
        "seconds": seconds,
        "loss_curve": losses[:: max(1, config.steps // 50)],
    }


@dataclasses.dataclass(frozen=True)
class ViLTaskConfig:
    dataset: str = "digits"  # "digits" (8x8 digits resized to 32) or "shapes"
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        if self.dataset not in ("digits", "shapes"):
            raise ValueError(f"dataset={self.dataset!r}: use 'digits' or 'shapes'")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")


def train_vil(config: ViLTaskConfig, progress: bool = False) -> dict:
    """Trains the default two-stage ViL on 32 x 32 built-in images; returns test accuracy and losses."""
    from frugal.models.vil import ViL, ViLConfig
    from frugal.scripts.data import load_digits, make_shapes_dataset
    from frugal.scripts.harness import fit_classifier

    data = load_digits(image_size=32) if config.dataset == "digits" else make_shapes_dataset(2000, 500)
    model = ViL(ViLConfig(in_channels=data.image_shape[-1], num_classes=data.num_classes), rngs=nnx.Rngs(config.seed))
    result = fit_classifier(
        model,
        data,
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        progress=progress,
        log_every=max(1, config.steps // 10),
    )
    losses = [h["loss"] for h in result.history if "loss" in h]
    return {
        "dataset": data.name,
        "steps": config.steps,
        "test_accuracy": result.test_accuracy,
        "chance": 1.0 / data.num_classes,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds": result.seconds,
    }


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    evidence: EvidenceTaskConfig = EvidenceTaskConfig()
    vil: ViLTaskConfig = ViLTaskConfig()
    ablation: bool = True  # also train the Longformer without global tokens


def run(config: TasksConfig, progress: bool = False) -> dict:
    """Longformer on the evidence task (with and without the global CLS) and ViL on images."""
    longformer = [train_longformer_evidence(config.evidence, progress)]
    if config.ablation:
        longformer.append(train_longformer_evidence(dataclasses.replace(config.evidence, use_global=False), progress))
    return {"longformer_evidence": longformer, "vil": train_vil(config.vil, progress)}


def tasks_markdown(figures: dict) -> str:
    from frugal.scripts.report import markdown_table

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
    return markdown_table(["model / task", "pattern", "steps", "first loss", "last loss", "test acc", "chance"], rows)


def tour_training(quick: bool) -> dict:
    """A tiny training run for the tour: the Longformer evidence task (and ViL with --full)."""
    if quick:
        evidence = EvidenceTaskConfig(
            seq_len=128,
            attention_window=8,
            hidden_size=32,
            layers=2,
            heads=2,
            steps=120,
            batch_size=32,
            num_test=128,
            learning_rate=3e-3,
        )
        figures = {"longformer_evidence": [train_longformer_evidence(evidence)]}
    else:
        figures = run(TasksConfig())
    r = figures["longformer_evidence"][0]
    summary = [
        (
            f"Longformer evidence task n={r['seq_len']} accuracy",
            f"{r['test_accuracy']:.2f} (chance {r['chance']:.2f}; loss {r['first_loss']:.2f} -> {r['last_loss']:.2f})",
        )
    ]
    if "vil" in figures:
        summary.append(("ViL test accuracy", f"{figures['vil']['test_accuracy']:.2f}"))
    return {
        "figures": figures,
        "markdown": "Training on built-in data:\n\n" + tasks_markdown(figures),
        "summary": summary,
    }


__all__ = [
    "EvidenceTaskConfig",
    "TasksConfig",
    "ViLTaskConfig",
    "make_evidence_batch",
    "run",
    "tasks_markdown",
    "tour_training",
    "train_longformer_evidence",
    "train_vil",
]
