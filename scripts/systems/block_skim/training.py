"""Block-Skim training, every part a `Trainer` run whose workdir (named by its recipe) is the cache:

1. the joint fine-tune of MiniLM with its skim predictors (or the vanilla QA fine-tune), embeddings frozen by
   differentiating only the rest;
2. the predictor-only refinement on cached diagonal attention blocks (the encoder is not in the state at
   all; the cached blocks go in as `constants`);
3. our extended predictors (match heads or widened classifiers) fitted full-batch on cached features, and
   one keep threshold per pruning layer picked on held-out training windows.

A finished run in its workdir is restored (zero steps), so `frugal skim` run twice only evaluates.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models.bert_qa import qa_loss, qa_model_from_minilm
from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step
from frugal.scripts.systems.block_skim.config import SkimConfig
from frugal.scripts.systems.block_skim.evaluation import collect_per_layer
from frugal.scripts.systems.block_skim.predictor_fit import HeadSet, finished
from frugal.scripts.systems.block_skim.qa_data import QAFeatures
from frugal.transforms.block_skim import (
    BlockSkimConfig,
    apply_block_skim,
    block_labels,
    block_valid,
    diagonal_blocks,
    joint_loss,
    skim_loss,
)

TRAIN_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
REFINE_BATCH = 16
JOINT_CHECKPOINT_EVERY = 100  # steps between the joint fine-tune's orbax checkpoints (and at the end)


# --------------------------------------------------------------------------------------------
# Cache keys: one Trainer workdir per recipe


def _key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def recipe_key(config: SkimConfig, skim: bool) -> str:
    """The fine-tune's recipe: data, optimisation and (for skim) the predictors; not the evaluation."""
    names = (
        "n_train",
        "distractors",
        "max_seq_len",
        "doc_stride",
        "context_tokens",
        "train_steps",
        "batch_size",
        "learning_rate",
        "predictor_learning_rate",
        "warmup_fraction",
        "freeze_embeddings",
        "seed",
    )
    fields = {k: v for k, v in config.resolved().items() if k in names}  # train_steps resolved, never None
    if skim:
        fields.update(
            predictor_layers=config.predictor_layers, alpha=config.alpha, beta=config.beta, label_rule=config.label_rule
        )
    fields["kind"] = "skim" if skim else "vanilla"
    return _key(fields)


def refine_layers(config: SkimConfig) -> tuple[int, ...]:
    return tuple(i for i in config.refine_layers if i in config.predictor_layers)


def question_layers(config: SkimConfig) -> tuple[int, ...]:
    return tuple(i for i in config.question_layers if i in config.predictor_layers)


def refine_key(config: SkimConfig) -> str:
    return _key(
        {
            "joint": recipe_key(config, True),
            "epochs": config.refine,
            "windows": config.refine_windows,
            "lr": config.refine_learning_rate,
            "layers": refine_layers(config),
        }
    )


def question_key(config: SkimConfig) -> str:
    fields = {
        "refined": refine_key(config),
        "features": config.predictor_features,
        "layers": question_layers(config),
        "windows": config.question_fit_windows,
        "steps": config.question_fit_steps,
        "selection": config.selection_windows,
        **({"match_steps": config.match_fit_steps} if config.predictor_features.endswith("+match") else {}),
        "recall": config.target_recall,
        "prune": config.prune_layers,
        **({"lr": config.match_learning_rate} if config.match_learning_rate != 1e-2 else {}),
    }
    return _key(fields)


def fine_tune_workdir(config: SkimConfig, *, skim: bool) -> Path | None:
    """The Trainer workdir of this fine-tune recipe (None without a cache)."""
    root = config.cache_root()
    return None if root is None else root / f"{'skim' if skim else 'vanilla'}-{recipe_key(config, skim)}"


def refine_workdir(config: SkimConfig) -> Path | None:
    root = config.cache_root()
    return None if root is None else root / f"skim-refined-{refine_key(config)}"


def question_workdir(config: SkimConfig) -> Path | None:
    root = config.cache_root()
    return None if root is None else root / f"skim-question-{question_key(config)}"


def refine_steps(config: SkimConfig) -> int:
    return config.refine * -(-config.refine_windows // REFINE_BATCH)


def _fit_steps(config: SkimConfig) -> int:
    return config.match_fit_steps if config.predictor_features.endswith("+match") else config.question_fit_steps


def fully_cached(config: SkimConfig, *, vanilla: bool) -> bool:
    """Whether every trained piece `run(config)` needs (and the vanilla model, if asked) is cached."""
    if config.cache_root() is None or not finished(fine_tune_workdir(config, skim=True), config.steps):
        return False
    if vanilla and not finished(fine_tune_workdir(config, skim=False), config.steps):
        return False
    if config.refine and not finished(refine_workdir(config), refine_steps(config)):
        return False
    if config.predictor_features == "diagonal":
        return True
    work = question_workdir(config)
    return finished(work, _fit_steps(config)) and (work / "info.json").is_file()


def _history(workdir: Path | None) -> list[dict]:
    path = None if workdir is None else workdir / "metrics.jsonl"
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# 1. The fine-tune


def _param_label(path) -> str:
    key = jax.tree_util.keystr(path)
    if "predictors" in key:
        return "predictor"
    return "encoder"


def trainable(config: SkimConfig):
    """The parameters the fine-tune differentiates and updates (all but the embeddings when frozen)."""
    if config.freeze_embeddings:
        return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("embeddings")))
    return nnx.Param


def make_optimizer(config: SkimConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay; the predictors get their own peak rate."""

    def schedule(peak):
        warmup = max(1, int(config.warmup_fraction * config.steps))
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, config.steps, peak * 0.05)

    transforms = {
        "encoder": optax.adamw(schedule(config.learning_rate), weight_decay=0.01),
        "predictor": optax.adamw(schedule(config.predictor_learning_rate), weight_decay=0.01),
    }
    return optax.multi_transform(
        transforms, lambda params: jax.tree_util.tree_map_with_path(lambda p, _: _param_label(p), params)
    )


def _vanilla_loss(model, batch, rng, constants):
    start, end = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    loss = qa_loss(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"])
    return loss, {"qa_loss": loss}


def _skim_loss(model, batch, rng, constants):
    return joint_loss(model, batch, qa_loss)


def fresh_model(config: SkimConfig, *, skim: bool) -> nnx.Module:
    """Pretrained MiniLM with a fresh span head (and fresh skim predictors when `skim`)."""
    base = qa_model_from_minilm(seed=config.seed)
    if not skim:
        return base
    return apply_block_skim(
        base,
        BlockSkimConfig(
            layers=config.predictor_layers, alpha=config.alpha, beta=config.beta, label_rule=config.label_rule
        ),
        seed=config.seed,
    )


def fine_tune(model: nnx.Module, train_features, config: SkimConfig, *, skim: bool, workdir: Path | None = None):
    """(fine-tuned model in eval mode, Trainer result). The batch order is a seeded permutation of the
    windows, taken `batch_size` at a time (wrapping around). `train_features`: QAFeatures, or a function
    returning them, called only when a step has to run."""
    model.train()
    state = TrainState(model, make_optimizer(config), wrt=trainable(config))
    cache: dict = {}

    def batch_at(step: int, rows: slice):
        if "features" not in cache:
            feats = train_features() if callable(train_features) else train_features
            cache["features"] = feats
            cache["order"] = np.random.default_rng(config.seed).permutation(len(feats))
        take = np.take(
            cache["order"], np.arange(step * config.batch_size, (step + 1) * config.batch_size), mode="wrap"
        )[rows]
        return {k: getattr(cache["features"], k)[take] for k in TRAIN_FIELDS}

    trainer = Trainer(
        state,
        loss_step(_skim_loss if skim else _vanilla_loss, has_aux=True),
        config=TrainerConfig(
            num_steps=config.steps,
            seed=config.seed,
            log_every=10,
            # a 600-step paper fine-tune takes ~45 min on 2 CPU cores: a killed run resumes within 100 steps
            checkpoint_every=JOINT_CHECKPOINT_EVERY,
            progress=config.progress,
            progress_label="train block-skim" if skim else "train vanilla",
        ),
        workdir=workdir,
    )
    result = trainer.run(batch_at, config.batch_size)
    trained = result.state.model
    trained.eval()
    return trained, result


# --------------------------------------------------------------------------------------------
# 2. Predictor-only refinement on cached attention


def collect_diagonal_blocks(model, features: QAFeatures, layers, batch_size: int = 8) -> np.ndarray:
    """(len(layers), W, K, bs, bs, H) float16 predictor inputs, running only the layers needed."""
    bs = model.skim_config.block_size
    return collect_per_layer(
        model,
        features,
        layers,
        lambda m, i, probs, mask, types, hidden: diagonal_blocks(probs, bs).astype(jnp.float16),
        batch_size,
    )


def refine_predictors(model, train_features, config: SkimConfig, workdir: Path | None = None) -> list[dict]:
    """Trains the pruning predictors of `refine_layers` alone on cached diagonal attention blocks; returns
    the Trainer history (read back from the workdir when restored).

    The joint fine-tune is short on a CPU; with the encoder fixed, the predictors see exactly the attention
    they will see at inference, so a few cheap epochs over cached inputs finish their training. The blocks,
    labels and validity masks are the Trainer's `constants`; a batch is 16 window indices (one seeded
    permutation per epoch).
    """
    cfg = model.skim_config
    layers = refine_layers(config)
    predictors = [model.predictors[cfg.layers.index(layer)] for layer in layers]
    for p in predictors:
        p.train()
    steps = refine_steps(config)
    state = TrainState(
        HeadSet(predictors),
        optax.adamw(optax.cosine_decay_schedule(config.refine_learning_rate, max(steps, 1)), weight_decay=0.01),
    )
    steps_per_epoch = -(-config.refine_windows // REFINE_BATCH)
    constants = None
    n = config.refine_windows
    if not finished(workdir, steps):
        feats = train_features() if callable(train_features) else train_features
        sub = feats.select(slice(0, min(config.refine_windows, len(feats))))
        n = len(sub)
        constants = {
            "blocks": collect_diagonal_blocks(model, sub, layers),
            "labels": np.asarray(
                block_labels(
                    sub.start_positions, sub.end_positions, sub.input_ids.shape[1], cfg.block_size, rule=cfg.label_rule
                )
            ),
            "valid": np.asarray(block_valid(jnp.asarray(sub.attention_mask), cfg.block_size)),
        }

    def loss_fn(heads, batch, rng, c):
        idx = batch["idx"]
        y, v = c["labels"][idx], c["valid"][idx]
        per_layer = []
        for li, predictor in enumerate(heads.heads):
            x = c["blocks"][li][idx]
            b, k = x.shape[:2]
            logits = predictor.classify_blocks(x.reshape((b * k,) + x.shape[2:]).astype(jnp.float32)).reshape(b, k, 2)
            per_layer.append(skim_loss(logits, y, v, cfg.beta))
        return sum(per_layer), {f"loss_layer{layer}": l for layer, l in zip(layers, per_layer)}

    def batch_at(step: int, rows: slice):
        epoch, within = divmod(step, steps_per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        take = np.take(order, np.arange(within * REFINE_BATCH, (within + 1) * REFINE_BATCH), mode="wrap")
        return {"idx": take[rows].astype(np.int32)}

    trainer = Trainer(
        state,
        loss_step(loss_fn, has_aux=True),
        config=TrainerConfig(
            num_steps=steps,
            seed=config.seed,
            log_every=steps_per_epoch,
            progress=config.progress,
            progress_label="refine predictors",
        ),
        workdir=workdir,
        constants=constants,
    )
    result = trainer.run(batch_at, REFINE_BATCH)
    for p, fitted in zip(predictors, result.state.model.heads):
        nnx.update(p, nnx.state(fitted))
        p.eval()
    return result.history or _history(workdir)


# --------------------------------------------------------------------------------------------
# 3. Extended predictors and their thresholds


def add_question_predictors(model, train_features, config: SkimConfig, workdir: Path | None = None):
    """(widened model, info): the predictors widened to `config.predictor_features` and fitted (encoder and
    CNN frozen); info holds the fit log and the per-pruning-layer thresholds picked on held-out training
    windows. Cached as the fit's Trainer workdir plus `info.json` there."""
    from frugal.scripts.systems.block_skim.predictor_fit import (
        collect_classifier_inputs,
        collect_match_inputs,
        fit_match_heads,
        fit_question_classifiers,
        keep_probabilities,
        match_keep_probabilities,
        protected_blocks,
        recall_curve,
        select_thresholds,
        window_labels,
        with_predictor_features,
    )

    model = with_predictor_features(model, config.predictor_features)
    match = config.predictor_features == "diagonal+question+match"
    fit = fit_match_heads if match else fit_question_classifiers
    fit_args = dict(
        steps=_fit_steps(config),
        learning_rate=config.match_learning_rate,
        weight_decay=1e-2 if match else 1e-3,
        batch_size=config.eval_batch_size,
        workdir=workdir,
    )
    if workdir is not None and (workdir / "info.json").is_file() and finished(workdir, _fit_steps(config)):
        fit(model, None, question_layers(config), **fit_args)
        model.eval()
        return model, {**json.loads((workdir / "info.json").read_text()), "from_cache": True}
    feats = train_features() if callable(train_features) else train_features
    n = len(feats)
    n_sel = min(config.selection_windows, max(1, n // 3))
    n_fit = min(config.question_fit_windows, n - n_sel)
    held = feats.select(slice(n - n_sel, n))
    t0 = time.perf_counter()
    # What the heads read does not depend on the heads: one unpruned pass over the fit and held-out windows.
    layers = sorted(set(question_layers(config)) | set(config.prune_layers))
    collect = collect_match_inputs if match else collect_classifier_inputs
    rows = np.r_[0:n_fit, n - n_sel : n]
    inputs = collect(model, feats.select(rows), layers, config.eval_batch_size)
    fit_inputs = inputs[[layers.index(i) for i in question_layers(config)], :n_fit]
    log = fit(model, feats.select(slice(0, n_fit)), question_layers(config), inputs=fit_inputs, **fit_args)
    held_inputs = inputs[[layers.index(i) for i in config.prune_layers], n_fit:]
    keep = match_keep_probabilities if match else keep_probabilities
    probs = keep(model, held_inputs, config.prune_layers)
    labels, valid = window_labels(held, model.skim_config)
    protected = protected_blocks(held, model.skim_config.block_size)
    chosen = select_thresholds(probs, labels, valid, protected, target_recall=config.target_recall)
    info = {
        "fit": log,
        "fit_windows": n_fit,
        "selection_windows": n_sel,
        # rounded down, so the picked blocks stay kept
        "selected_thresholds": [math.floor(t * 1e4) / 1e4 for t in chosen],
        "target_recall": config.target_recall,
        "held_out": {
            str(layer): recall_curve(p, labels, valid, protected, [t])[0]
            for layer, p, t in zip(config.prune_layers, probs, chosen)
        },
        "seconds": time.perf_counter() - t0,
    }
    if workdir is not None:
        (workdir / "info.json").write_text(json.dumps(info, indent=1))
    model.eval()
    return model, {**info, "from_cache": False}


# --------------------------------------------------------------------------------------------
# All of it


def trained_models(config: SkimConfig, train_features, *, skim: bool):
    """(model, log, seconds spent training). log: {"joint": history, "from_cache": bool, and for skim
    models "refine": history, "question_predictors": info} (histories read back from the workdirs when
    restored). train_features: QAFeatures, or a zero-argument function returning them (called only when
    something has to be trained)."""
    t0 = time.perf_counter()
    workdir = fine_tune_workdir(config, skim=skim)
    model, result = fine_tune(fresh_model(config, skim=skim), train_features, config, skim=skim, workdir=workdir)
    from_cache = result.start_step == config.steps and config.steps > 0
    log = {"joint": result.history or _history(workdir), "from_cache": from_cache}
    if skim and config.refine:
        log["refine"] = refine_predictors(model, train_features, config, refine_workdir(config))
    if skim and config.predictor_features != "diagonal":
        model, log["question_predictors"] = add_question_predictors(
            model, train_features, config, question_workdir(config)
        )
    return model, log, time.perf_counter() - t0
