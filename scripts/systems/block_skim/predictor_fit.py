"""Question-aware skim predictors: convert a trained Block-Skim model and fit the new classifiers.

Our extension beyond the paper (`BlockSkimConfig.predictor_features="diagonal+question"`): the
predictor's classifier also reads, per head, the question<->block attention features. Starting from a
model whose predictors were trained on the diagonal blocks alone, `with_predictor_features` widens each
classifier with zero weights for the new inputs (so the converted model predicts exactly what it did),
and `fit_question_classifiers` then trains only those classifiers - encoder and CNN frozen - full-batch
on features computed once from the unpruned forward of training windows. That costs one encoder pass
over the windows plus seconds of optimisation, instead of epochs of CNN training.

The second extension (`"diagonal+question+match"`) keeps the paper CNN and its classifier as they are
and puts a small MLP (`MatchHead`) on top: per block it reads the CNN's logit margin, the question
features and how well the layer's hidden states match the question's tokens, next to the neighbouring
blocks and relative to the window's best block. `fit_match_heads` trains only those heads, the same way.

`select_thresholds` picks one keep threshold per pruning layer on held-out *training* windows: the
largest threshold whose answer-block recall on those windows stays at or above a target.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.scripts.systems.block_skim.evaluation import collect_per_layer
from frugal.scripts.systems.block_skim.qa_data import QAFeatures
from frugal.transforms.block_skim import (
    BlockSkimConfig,
    BlockSkimQA,
    block_labels,
    block_valid,
    diagonal_blocks,
    question_features,
    question_mask_from,
    skim_loss,
    with_block_context,
)


def with_predictor_features(model: BlockSkimQA, features: str) -> BlockSkimQA:
    """A copy of `model` whose predictors use `features`; the CNN and its BatchNorm statistics are copied.

    To "diagonal+question" the classifier is widened with zero weights for the new inputs, so the skim
    logits equal the original's until `fit_question_classifiers` runs. To "diagonal+question+match" the
    paper classifier is copied unchanged (its logit margin is one of the match head's inputs) and the match
    head starts untrained: fit it with `fit_match_heads`. The copy is in eval mode.
    """
    old_cfg = model.skim_config
    if features == old_cfg.predictor_features:
        return nnx.clone(model)
    if old_cfg.predictor_features != "diagonal":
        raise ValueError(f"can only widen 'diagonal' predictors, got {old_cfg.predictor_features!r}")
    cfg = dataclasses.replace(old_cfg, predictor_features=features)
    new = BlockSkimQA(nnx.clone(model.qa_model), cfg, rngs=nnx.Rngs(0))
    for old_p, new_p in zip(model.predictors, new.predictors):
        for name in ("conv1", "norm1", "conv2", "norm2"):
            nnx.update(getattr(new_p, name), nnx.clone(nnx.state(getattr(old_p, name))))
        if features == "diagonal+question+match":
            nnx.update(new_p.classifier, nnx.clone(nnx.state(old_p.classifier)))
            continue
        kernel = old_p.classifier.kernel[...]
        pad = new_p.classifier.kernel[...].shape[0] - kernel.shape[0]
        new_p.classifier.kernel.set_value(jnp.concatenate([kernel, jnp.zeros((pad, 2), kernel.dtype)]))
        new_p.classifier.bias.set_value(old_p.classifier.bias[...])
    new.eval()  # conversion happens after training; BatchNorm keeps the running statistics it copied
    return new


def paper_predictors(model: BlockSkimQA) -> BlockSkimQA:
    """The paper's predictors inside a "diagonal+question+match" model: a "diagonal" copy with the same
    encoder, CNNs and CNN classifiers (what the match heads were stacked on), in eval mode."""
    if model.skim_config.predictor_features != "diagonal+question+match":
        raise ValueError(f"expected a 'diagonal+question+match' model, got {model.skim_config.predictor_features!r}")
    cfg = dataclasses.replace(model.skim_config, predictor_features="diagonal")
    plain = BlockSkimQA(nnx.clone(model.qa_model), cfg, rngs=nnx.Rngs(0))
    for src, dst in zip(model.predictors, plain.predictors):
        for name in ("conv1", "norm1", "conv2", "norm2", "classifier"):
            nnx.update(getattr(dst, name), nnx.clone(nnx.state(getattr(src, name))))
    plain.eval()
    return plain


def collect_classifier_inputs(model: BlockSkimQA, features: QAFeatures, layers, batch_size: int = 8) -> np.ndarray:
    """(len(layers), W, K, D) what each listed predictor's classifier reads on the unpruned forward.

    D = the CNN's pooled features (+ the question features for 'diagonal+question' predictors). The
    model runs in eval mode (BatchNorm uses its running statistics), only up to the last listed layer.
    """
    model = nnx.clone(model)
    model.eval()
    cfg = model.skim_config
    index = [cfg.layers.index(i) for i in layers]

    def classifier_inputs(m, i, probs, mask, types, hidden):
        blocks = diagonal_blocks(probs, cfg.block_size)
        b, k = blocks.shape[:2]
        feats = m.predictors[index[list(layers).index(i)]].pooled(blocks.reshape((b * k,) + blocks.shape[2:]))
        feats = feats.reshape(b, k, -1)
        if cfg.predictor_features == "diagonal+question":
            question = question_mask_from(mask, types)
            feats = jnp.concatenate([feats, question_features(probs, question, mask, cfg.block_size)], -1)
        return feats

    return collect_per_layer(model, features, layers, classifier_inputs, batch_size)


def collect_match_inputs(model: BlockSkimQA, features: QAFeatures, layers, batch_size: int = 8) -> np.ndarray:
    """(len(layers), W, K, 6 * match_base_width) what each listed match head reads on the unpruned forward."""
    model = nnx.clone(model)
    model.eval()
    cfg = model.skim_config
    if cfg.predictor_features != "diagonal+question+match":
        raise ValueError(f"the model's predictors use {cfg.predictor_features!r}, not 'diagonal+question+match'")

    def head_inputs(m, i, probs, mask, types, hidden):
        base = m.predictors[cfg.layers.index(i)].match_base(probs, question_mask_from(mask, types), mask, hidden)
        return with_block_context(base, block_valid(mask, cfg.block_size))

    return collect_per_layer(model, features, layers, head_inputs, batch_size)


class HeadSet(nnx.Module):
    """The modules one fit trains together (each with its own loss; the losses are summed)."""

    def __init__(self, heads):
        self.heads = nnx.List(heads)


def finished(workdir: str | Path | None, steps: int) -> bool:
    """Whether `workdir` holds a finished Trainer run of `steps` steps (its last checkpoint)."""
    return workdir is not None and (Path(workdir) / "checkpoints" / str(steps)).is_dir()


def fit_heads(
    heads,
    inputs: np.ndarray | None,
    labels: np.ndarray,
    valid: np.ndarray,
    beta: float,
    *,
    steps: int,
    learning_rate: float,
    weight_decay: float,
    workdir: str | Path | None = None,
) -> list[dict]:
    """Fits `heads` (modules mapping (N, D) features to (N, 2) logits) in place: `steps` full-batch AdamW steps
    (cosine-decayed rate) of the class-weighted skim CE, one Trainer run for all of them.

    inputs: (len(heads), N, D) what each head reads, labels/valid: (N,). They go into the Trainer as
    `constants` (jit arguments, never folded into the program: they can be tens of MB). A finished run in
    `workdir` is restored instead (then `inputs` may be None). Returns per head
    {"loss_start", "loss_end"} (empty dicts when restored).
    """
    from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step

    state = TrainState(
        HeadSet(list(heads)),
        optax.adamw(optax.cosine_decay_schedule(learning_rate, max(steps, 1)), weight_decay=weight_decay),
    )
    if finished(workdir, steps):
        trainer = Trainer(
            state, loss_step(lambda *_: 0.0), config=TrainerConfig(steps, progress=False), workdir=workdir
        )
        restored = trainer.run(lambda step, rows: {}, 1).state.model
        for head, fitted in zip(heads, restored.heads):
            nnx.update(head, nnx.state(fitted))
        return [{} for _ in heads]
    if inputs is None:
        raise ValueError(f"fit_heads: no finished run in workdir={workdir}, so inputs are needed")
    constants = {
        "x": jnp.asarray(inputs, jnp.float32),
        "y": jnp.asarray(labels.reshape(-1)),
        "v": jnp.asarray(valid.reshape(-1)),
    }

    def losses(model, c):
        return jnp.stack([skim_loss(head(c["x"][i]), c["y"], c["v"], beta) for i, head in enumerate(model.heads)])

    def loss_fn(model, batch, rng, c):
        per_head = losses(model, c)
        return per_head.sum(), {f"loss_{i}": l for i, l in enumerate(per_head)}

    losses_of = nnx.jit(losses)
    start = np.asarray(losses_of(state.model, constants))
    trainer = Trainer(
        state,
        loss_step(loss_fn, has_aux=True),
        config=TrainerConfig(steps, log_every=max(steps, 1), progress=False),
        workdir=workdir,
        constants=constants,
        eval_fn=lambda st: {f"end_{i}": l for i, l in enumerate(np.asarray(losses_of(st.model, constants)))},
    )
    result = trainer.run(lambda step, rows: {}, 1)
    end = [result.history[-1][f"end_{i}"] for i in range(len(heads))] if result.history else start
    for head, fitted in zip(heads, result.state.model.heads):
        nnx.update(head, nnx.state(fitted))
    return [{"loss_start": float(a), "loss_end": float(b)} for a, b in zip(start, end)]


def fit_match_heads(
    model: BlockSkimQA,
    features: QAFeatures | None,
    layers,
    *,
    steps: int = 300,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-2,
    batch_size: int = 8,
    inputs: np.ndarray | None = None,
    workdir: str | Path | None = None,
) -> dict:
    """Fits the match heads of the predictors at `layers` in place: standardization statistics from the
    real blocks of these windows, then full-batch AdamW on the class-weighted CE (weights [1, beta]),
    encoder and CNN frozen (the heads read cached inputs). A finished fit in `workdir` is restored.

    Few steps on purpose: the MLP fits its training windows perfectly within ~1,000 steps and then keeps
    more blocks at equal answer recall on held-out windows. Returns per layer the loss at start and end.
    """
    cfg = model.skim_config
    heads = [model.predictors[cfg.layers.index(layer)].match_head for layer in layers]

    def standardize(xs, valid):
        real = valid.reshape(-1) > 0
        for head, x in zip(heads, xs):
            head.mean.set_value(jnp.asarray(x[real].mean(0)))
            head.scale.set_value(jnp.asarray(x[real].std(0) + 1e-6))

    optimizer = dict(steps=steps, learning_rate=learning_rate, weight_decay=weight_decay, workdir=workdir)
    return _fit_on_cached_inputs(
        model, heads, features, layers, collect_match_inputs, inputs, batch_size, optimizer, prepare=standardize
    )


def match_keep_probabilities(model: BlockSkimQA, inputs: np.ndarray, layers) -> np.ndarray:
    """(len(layers), W, K) P(keep) of the match heads from precomputed `collect_match_inputs`."""
    cfg = model.skim_config
    return np.stack(
        [
            np.asarray(
                jax.nn.softmax(model.predictors[cfg.layers.index(layer)].match_head(jnp.asarray(inputs[li])), -1)[
                    ..., 1
                ]
            )
            for li, layer in enumerate(layers)
        ]
    )


def window_labels(features: QAFeatures, config: BlockSkimConfig) -> tuple[np.ndarray, np.ndarray]:
    """(W, K) block labels and (W, K) validity (blocks with real tokens) of the windows."""
    labels = np.asarray(
        block_labels(
            features.start_positions,
            features.end_positions,
            features.input_ids.shape[1],
            config.block_size,
            rule=config.label_rule,
        )
    )
    valid = np.asarray(block_valid(jnp.asarray(features.attention_mask), config.block_size))
    return labels, valid


def fit_question_classifiers(
    model: BlockSkimQA,
    features: QAFeatures | None,
    layers,
    *,
    steps: int = 400,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-3,
    batch_size: int = 8,
    inputs: np.ndarray | None = None,
    workdir: str | Path | None = None,
) -> dict:
    """Trains the classifiers of the predictors at `layers` in place (full batch, AdamW, weighted CE),
    encoder and CNN frozen (the classifiers read cached inputs). A finished fit in `workdir` is restored.

    inputs: precomputed `collect_classifier_inputs(model, features, layers)` (computed when None).
    Returns per layer the loss at the start and the end.
    """
    cfg = model.skim_config
    heads = [model.predictors[cfg.layers.index(layer)].classifier for layer in layers]
    optimizer = dict(steps=steps, learning_rate=learning_rate, weight_decay=weight_decay, workdir=workdir)
    return _fit_on_cached_inputs(
        model, heads, features, layers, collect_classifier_inputs, inputs, batch_size, optimizer
    )


def _fit_on_cached_inputs(model, heads, features, layers, collect, inputs, batch_size, optimizer, prepare=None) -> dict:
    """The shared body of the head fits: restore a finished fit, else collect (or take) the cached
    inputs, let `prepare(xs, valid)` set input statistics, and fit full batch through `fit_heads`."""
    cfg = model.skim_config
    if finished(optimizer["workdir"], optimizer["steps"]):
        fit_heads(heads, None, None, None, cfg.beta, **optimizer)
        return {}
    x_all = collect(model, features, layers, batch_size) if inputs is None else inputs
    labels, valid = window_labels(features, cfg)
    xs = np.asarray(x_all, np.float32).reshape(len(layers), -1, x_all.shape[-1])
    if prepare is not None:
        prepare(xs, valid)
    fits = fit_heads(heads, xs, labels, valid, cfg.beta, **optimizer)
    return dict(zip(map(str, layers), fits))


def keep_probabilities(model: BlockSkimQA, inputs: np.ndarray, layers) -> np.ndarray:
    """(len(layers), W, K) P(keep) from precomputed classifier inputs."""
    cfg = model.skim_config
    out = []
    for li, layer in enumerate(layers):
        head = model.predictors[cfg.layers.index(layer)].classifier
        logits = jnp.asarray(inputs[li]) @ head.kernel[...] + head.bias[...]
        out.append(np.asarray(jax.nn.softmax(logits, -1)[..., 1]))
    return np.stack(out)


def recall_curve(
    keep_prob: np.ndarray, labels: np.ndarray, valid: np.ndarray, protected: np.ndarray, thresholds
) -> list[dict]:
    """Per threshold: kept fraction of the non-question blocks and answer-block recall (question blocks kept)."""
    rows = []
    v = valid > 0
    context = v & ~protected
    pos = (labels > 0) & v
    for t in thresholds:
        keep = ((keep_prob >= t) | protected) & v
        rows.append(
            {
                "threshold": float(t),
                "kept_fraction": float(keep.sum() / v.sum()),
                "kept_context_fraction": float((keep & context).sum() / max(context.sum(), 1)),
                "answer_block_recall": float((keep & pos).sum() / max(pos.sum(), 1)),
            }
        )
    return rows


def protected_blocks(features: QAFeatures, block_size: int) -> np.ndarray:
    """(W, K) blocks touching [CLS]/question tokens (always kept at inference)."""
    k = features.input_ids.shape[1] // block_size
    return np.arange(k)[None, :] * block_size < features.question_length[:, None]


def select_thresholds(
    keep_prob: np.ndarray, labels: np.ndarray, valid: np.ndarray, protected: np.ndarray, *, target_recall: float = 0.99
) -> list[float]:
    """Per layer the largest threshold keeping answer-block recall >= target_recall on these windows.

    keep_prob: (L, W, K). Protected (question) blocks are always kept, so only the other answer blocks
    can be missed; at most floor((1 - target_recall) * answer blocks) of them are let go.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall={target_recall} must be in (0, 1]")
    pos = (labels > 0) & (valid > 0)
    allowed_misses = int(np.floor((1.0 - target_recall) * pos.sum() + 1e-9))
    chosen = []
    for p in keep_prob:
        at_risk = np.sort(p[pos & ~protected])
        if at_risk.size == 0:
            chosen.append(1.0)
            continue
        chosen.append(float(at_risk[min(allowed_misses, at_risk.size - 1)]))
    return chosen
