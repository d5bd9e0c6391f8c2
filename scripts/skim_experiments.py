"""Block-Skim on the real MiniLM: fine-tune for extractive QA with and without skim predictors, then
measure EM/F1, the FLOPs speedup counted from the tokens each layer processes, and wall-clock at batch 1.

`run(config) -> dict` is what `frugal skim` and the tour call. Fine-tuned weights are cached as
safetensors under `cache_dir`, keyed by the training recipe, so a rerun only evaluates.
The wall-clock section takes the shared benchmark lock (`/tmp/frugal-bench.lock`) while it times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from models.bert_qa import decode_answers, qa_loss, qa_model_from_minilm, squad_scores
from scripts.qa_data import QAFeatures, featurize, make_fact_qa, plain_tokenizer
from transforms.block_skim import (BlockSkimConfig, SkimRunner, apply_block_skim, block_labels, block_valid,
                                   diagonal_blocks, encoder_layer_flops, joint_loss, skim_flops, skim_loss)

PAPER = {"model": "BERT-base, SQuAD v1.1 (Guan et al. 2022, Block-Skim table)", "vanilla_f1": 88.32,
         "block_skim_f1": 88.52, "block_skim_flops_speedup": 3.01}


@dataclasses.dataclass(frozen=True)
class SkimExperimentConfig:
    n_train: int = 3000
    n_dev: int = 200
    max_seq_len: int = 384
    doc_stride: int = 128
    context_tokens: tuple[int, int] = (300, 360)
    train_steps: int = 120
    batch_size: int = 8
    learning_rate: float = 1.5e-4
    predictor_learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    freeze_embeddings: bool = True
    predictor_layers: tuple[int, ...] = (0, 1, 2, 3, 4)  # trained
    prune_layers: tuple[int, ...] = (0, 1)  # used at inference
    thresholds: tuple[float, ...] = (0.0, 0.05, 0.1, 0.3, 0.5)
    alpha: float = 0.1
    beta: float = 20.0
    label_rule: str = "any"
    train_vanilla: bool = True
    diagnostics: bool = True  # per-layer predictor kept fraction / answer-block recall
    refine_epochs: int = 20  # predictor-only epochs on cached attention after the joint fine-tune (0: none)
    refine_windows: int = 600
    refine_learning_rate: float = 2e-3
    lower_priority: bool = True  # nice 19 for training and accuracy sweeps (timing keeps its priority if cached)
    eval_batch_size: int = 16
    timing_examples: int = 30
    timing_repeats: int = 2
    seed: int = 0
    lock_timeout_s: float | None = None  # wait this long for the benchmark lock, then time without it
    cache_dir: str | None = "reports/skim/cache"
    outdir: str = "reports/skim"
    label: str = "full"
    progress: bool = True

    def __post_init__(self):
        for name in ("n_train", "n_dev", "train_steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.timing_examples < 0:
            raise ValueError(f"timing_examples={self.timing_examples} must be >= 0")
        if self.max_seq_len % 32 or not 64 <= self.max_seq_len <= 512:
            raise ValueError(f"max_seq_len={self.max_seq_len} must be a multiple of 32 in [64, 512]")
        if not set(self.prune_layers) <= set(self.predictor_layers):
            raise ValueError(f"prune_layers={self.prune_layers} must be a subset of predictor_layers="
                             f"{self.predictor_layers}")
        if any(not 0 <= t <= 1 for t in self.thresholds) or not self.thresholds:
            raise ValueError(f"thresholds={self.thresholds} must be non-empty values in [0, 1]")


# --------------------------------------------------------------------------------------------
# Training


def _param_label(path) -> str:
    key = jax.tree_util.keystr(path)
    if "predictors" in key:
        return "predictor"
    if "embeddings" in key:
        return "embeddings"
    return "encoder"


def make_optimizer(config: SkimExperimentConfig) -> optax.GradientTransformation:
    def schedule(peak):
        warmup = max(1, int(config.warmup_fraction * config.train_steps))
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, config.train_steps, peak * 0.05)

    transforms = {"encoder": optax.adamw(schedule(config.learning_rate), weight_decay=0.01),
                  "predictor": optax.adamw(schedule(config.predictor_learning_rate), weight_decay=0.01),
                  "embeddings": optax.set_to_zero() if config.freeze_embeddings
                  else optax.adamw(schedule(config.learning_rate), weight_decay=0.01)}
    return optax.multi_transform(
        transforms, lambda params: jax.tree_util.tree_map_with_path(lambda p, _: _param_label(p), params))


@nnx.jit
def _vanilla_step(model, optimizer, batch):
    def loss_fn(model):
        start, end = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = qa_loss(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"])
        return loss, {"qa_loss": loss}

    (loss, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, parts


@nnx.jit
def _skim_step(model, optimizer, batch):
    (loss, parts), grads = nnx.value_and_grad(lambda m: joint_loss(m, batch, qa_loss), has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, parts


_TRAIN_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")


def train(model: nnx.Module, features: QAFeatures, config: SkimExperimentConfig, *, skim: bool) -> list[dict]:
    """Fine-tunes `model` in place (vanilla QA loss, or the joint Block-Skim loss); returns the loss log."""
    model.train()
    optimizer = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(features))
    step_fn = _skim_step if skim else _vanilla_step
    log = []
    steps = range(config.train_steps)
    if config.progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="train block-skim" if skim else "train vanilla", leave=False)
    for step in steps:
        take = np.take(order, np.arange(step * config.batch_size, (step + 1) * config.batch_size), mode="wrap")
        batch = {k: jnp.asarray(getattr(features, k)[take]) for k in _TRAIN_FIELDS}
        loss, parts = step_fn(model, optimizer, batch)
        if step % 10 == 0 or step == config.train_steps - 1:
            entry = {"step": step, "loss": float(loss), **{k: float(v) for k, v in parts.items()}}
            log.append(entry)
            if config.progress:
                steps.set_postfix(loss=f"{entry['loss']:.3f}")
    model.eval()
    return log


def _recipe_key(config: SkimExperimentConfig, skim: bool) -> str:
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if k in ("n_train", "max_seq_len", "doc_stride", "context_tokens", "train_steps", "batch_size",
                       "learning_rate", "predictor_learning_rate", "warmup_fraction", "freeze_embeddings", "seed")}
    if skim:
        fields.update(predictor_layers=config.predictor_layers, alpha=config.alpha, beta=config.beta,
                      label_rule=config.label_rule)
    fields["kind"] = "skim" if skim else "vanilla"
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def save_weights(model: nnx.Module, path: Path) -> None:
    from safetensors.numpy import save_file

    flat = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param,
                                                                                              nnx.BatchStat)))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(flat, str(tmp))
    tmp.replace(path)


def load_weights(model: nnx.Module, path: Path) -> None:
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    flat = dict(nnx.to_flat_state(state))
    names = {"/".join(map(str, p)): p for p in flat}
    if set(names) != set(tensors):
        raise ValueError(f"cached weights {path} do not match the model; delete the file to retrain")
    for name, p in names.items():
        flat[p].set_value(jnp.asarray(tensors[name]))
    nnx.update(model, state)


def cache_path(config: SkimExperimentConfig, *, skim: bool) -> Path | None:
    """Where the fine-tuned weights of this recipe are cached (None without a cache_dir)."""
    if not config.cache_dir:
        return None
    return Path(config.cache_dir) / f"{'skim' if skim else 'vanilla'}-{_recipe_key(config, skim)}.safetensors"


def trained_models(config: SkimExperimentConfig, train_features, *, skim: bool):
    """(model, train log or None when loaded from the cache, seconds spent training).

    train_features: QAFeatures, or a zero-argument function returning them (called only when training).
    """
    base = qa_model_from_minilm(seed=config.seed)
    model = apply_block_skim(base, BlockSkimConfig(layers=config.predictor_layers, alpha=config.alpha,
                                                   beta=config.beta, label_rule=config.label_rule),
                             seed=config.seed) if skim else base
    path = cache_path(config, skim=skim)
    log, seconds = None, 0.0
    if path is not None and path.is_file():
        load_weights(model, path)
        model.eval()
    else:
        t0 = time.perf_counter()
        log = train(model, train_features() if callable(train_features) else train_features, config, skim=skim)
        seconds = time.perf_counter() - t0
        if path is not None:
            save_weights(model, path)
    if skim and config.refine_epochs:
        refined = path.with_name(f"skim-refined-{_refine_key(config)}.safetensors") if path is not None else None
        if refined is not None and refined.is_file():
            load_weights(model, refined)
            model.eval()
        else:
            t0 = time.perf_counter()
            refine_log = refine_predictors(model, train_features() if callable(train_features) else train_features,
                                           config)
            seconds += time.perf_counter() - t0
            log = {"joint": log, "refine": refine_log}
            if refined is not None:
                save_weights(model, refined)
    return model, log, seconds


def _refine_key(config: SkimExperimentConfig) -> str:
    fields = {"joint": _recipe_key(config, True), "epochs": config.refine_epochs, "windows": config.refine_windows,
              "lr": config.refine_learning_rate, "layers": config.prune_layers}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def collect_diagonal_blocks(model, features: QAFeatures, layers, batch_size: int = 8) -> np.ndarray:
    """(len(layers), W, K, bs, bs, H) float16 predictor inputs, running only the layers needed."""
    graphdef, state = nnx.split(model)
    bs = model.skim_config.block_size
    last = max(layers) + 1

    @jax.jit
    def blocks_fn(state, ids, mask, types):
        m = nnx.merge(graphdef, state)
        enc = m.qa_model.encoder
        x = enc.embeddings(ids, types)
        bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        out = []
        for i in range(last):
            x, probs = enc.layers[i](x, bias)
            if i in layers:
                out.append(diagonal_blocks(probs, bs).astype(jnp.float16))
        return jnp.stack(out)

    chunks = [np.asarray(blocks_fn(state, features.input_ids[r], features.attention_mask[r],
                                   features.token_type_ids[r])) for r in _batches(len(features), batch_size)]
    return np.concatenate(chunks, axis=1)


def refine_predictors(model, features: QAFeatures, config: SkimExperimentConfig) -> dict:
    """Trains the pruning predictors alone (encoder frozen) on cached diagonal attention blocks.

    The joint fine-tune is short on this CPU; with the encoder fixed, the predictors see exactly the
    attention they will see at inference, so a few cheap epochs over cached inputs finish their training.
    """
    cfg = model.skim_config
    rows = slice(0, min(config.refine_windows, len(features)))
    sub = features.select(rows)
    blocks = collect_diagonal_blocks(model, sub, config.prune_layers)
    labels = np.asarray(block_labels(sub.start_positions, sub.end_positions, sub.input_ids.shape[1],
                                     cfg.block_size, rule=cfg.label_rule))
    valid = np.asarray(block_valid(jnp.asarray(sub.attention_mask), cfg.block_size))
    log = {}
    steps_per_epoch = -(-len(sub) // 16)
    for li, layer in enumerate(config.prune_layers):
        predictor = model.predictors[cfg.layers.index(layer)]
        predictor.train()
        tx = optax.adamw(optax.cosine_decay_schedule(config.refine_learning_rate,
                                                     config.refine_epochs * steps_per_epoch), weight_decay=0.01)
        opt = nnx.Optimizer(predictor, tx, wrt=nnx.Param)

        @nnx.jit
        def step(predictor, opt, x, y, v):
            def loss_fn(p):
                b, k = x.shape[:2]
                feats = x.reshape((b * k,) + x.shape[2:]).astype(jnp.float32)
                logits = p.classify_blocks(feats).reshape(b, k, 2)
                return skim_loss(logits, y, v, cfg.beta)

            loss, grads = nnx.value_and_grad(loss_fn)(predictor)
            opt.update(predictor, grads)
            return loss

        rng = np.random.default_rng(config.seed + li)
        losses = []
        for epoch in range(config.refine_epochs):
            order = rng.permutation(len(sub))
            total = 0.0
            for start in range(0, len(sub), 16):
                take = order[start:start + 16]
                total += float(step(predictor, opt, jnp.asarray(blocks[li, take]), jnp.asarray(labels[take]),
                                    jnp.asarray(valid[take])))
            losses.append(total / steps_per_epoch)
        predictor.eval()
        log[str(layer)] = losses
    return log


# --------------------------------------------------------------------------------------------
# Evaluation


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _padded_len(num_tokens: np.ndarray, block: int = 32) -> np.ndarray:
    return -(-num_tokens // block) * block


def evaluate_full(forward, features: QAFeatures, examples, batch_size: int) -> dict:
    """EM/F1 of an unskimmed forward(ids, mask, types) -> (start, end)."""
    starts, ends = [], []
    for rows in _batches(len(features), batch_size):
        s, e = forward(features.input_ids[rows], features.attention_mask[rows], features.token_type_ids[rows])
        starts.append(np.asarray(s))
        ends.append(np.asarray(e))
    start, end = np.concatenate(starts), np.concatenate(ends)
    return {**squad_scores(decode_answers(features, start, end, examples), examples), "start": start, "end": end}


def evaluate_skim(runner: SkimRunner, features: QAFeatures, examples, threshold: float, batch_size: int,
                  model_config) -> dict:
    """EM/F1 at a threshold, the mean tokens per layer and the FLOPs speedup at batch-1 semantics.

    A window's unskimmed cost is every layer on its length rounded up to whole 32-token blocks; its
    skimmed cost is what each layer processes after the kept blocks are compacted (plus predictors).
    """
    bs = runner.config.block_size
    starts, ends, tokens, flops_full, flops_skim = [], [], [], 0, 0
    h, f, heads = model_config.hidden_size, model_config.intermediate_size, model_config.num_attention_heads
    n_layers = runner.num_layers
    for rows in _batches(len(features), batch_size):
        res = runner(features.input_ids[rows], features.attention_mask[rows], features.token_type_ids[rows],
                     features.question_length[rows], threshold)
        starts.append(res.start_logits)
        ends.append(res.end_logits)
        lengths = _padded_len(features.num_tokens[rows], bs)
        for w, length in enumerate(lengths):
            per_layer, blocks_seen, current = [], [], int(length)
            bounds = [j for j in range(n_layers)]
            kept_iter = iter(res.kept_blocks)
            for layer in bounds:
                per_layer.append(current)
                if layer in runner.layers:
                    blocks_seen.append(current // bs)
                    current = int(next(kept_iter)[w].sum()) * bs
            tokens.append(per_layer)
            flops_skim += skim_flops(per_layer, blocks_seen, hidden=h, intermediate=f, num_heads=heads, block_size=bs)
            flops_full += n_layers * encoder_layer_flops(int(length), h, f) + 2 * int(length) * h * 2
    start, end = np.concatenate(starts), np.concatenate(ends)
    scores = squad_scores(decode_answers(features, start, end, examples), examples)
    tokens = np.asarray(tokens)
    return {**scores, "threshold": threshold, "flops_speedup": flops_full / flops_skim,
            "mean_tokens_per_layer": tokens.mean(0).round(1).tolist(),
            "mean_window_tokens": float(_padded_len(features.num_tokens, bs).mean()), "start": start, "end": end}


def predictor_diagnostics(model, features: QAFeatures, thresholds, batch_size: int) -> dict:
    """Per predictor layer on the unpruned forward: kept-block fraction and answer-block recall per threshold."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def probs_fn(state, ids, mask, types):
        m = nnx.merge(graphdef, state)
        _, _, skim = m(ids, mask, types)
        return jnp.stack([jax.nn.softmax(s, -1)[..., 1] for s in skim])

    cfg = model.skim_config
    keep_probs, labels, valid = [], [], []
    for rows in _batches(len(features), batch_size):
        keep_probs.append(np.asarray(probs_fn(state, features.input_ids[rows], features.attention_mask[rows],
                                              features.token_type_ids[rows])))
        labels.append(np.asarray(block_labels(features.start_positions[rows], features.end_positions[rows],
                                              features.input_ids.shape[1], cfg.block_size)))
        valid.append(np.asarray(block_valid(jnp.asarray(features.attention_mask[rows]), cfg.block_size)) > 0)
    p, y, v = np.concatenate(keep_probs, 1), np.concatenate(labels), np.concatenate(valid)
    out = {}
    for li, layer in enumerate(cfg.layers):
        rows = []
        for t in thresholds:
            keep = (p[li] >= t) & v
            rows.append({"threshold": t, "kept_fraction": float(keep.sum() / v.sum()),
                         "answer_block_recall": float((keep & (y > 0)).sum() / max((y > 0).sum(), 1))})
        out[str(layer)] = rows
    return out


@contextlib.contextmanager
def _bench_lock(timeout_s: float | None):
    """Holds the shared benchmark lock; yields whether it was acquired (after timeout_s it times anyway)."""
    import fcntl

    try:
        handle = open("/tmp/frugal-bench.lock", "a")
    except OSError:
        yield False
        return
    with handle:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    acquired = False
                    break
                time.sleep(0.2)
        try:
            yield acquired
        finally:
            if acquired:
                fcntl.flock(handle, fcntl.LOCK_UN)


def time_batch1(runner: SkimRunner, features: QAFeatures, thresholds, n: int, repeats: int, *,
                lock_timeout_s: float | None = None) -> dict:
    """Seconds per window at batch 1: the unskimmed jitted forward vs the staged skim forward per threshold.

    Each window is cut to its length rounded up to whole blocks (no padding beyond that). Every shape is
    compiled in an untimed warm-up pass; the timed passes alternate the variants window by window.
    """
    rows = list(range(min(n, len(features))))
    inputs = []
    for r in rows:
        length = int(_padded_len(features.num_tokens[r:r + 1])[0])
        inputs.append((features.input_ids[r:r + 1, :length], features.attention_mask[r:r + 1, :length],
                       features.token_type_ids[r:r + 1, :length], features.question_length[r:r + 1]))

    def full(x):
        runner.full(*x[:3])

    def skim(t):
        return lambda x: runner(*x, t)

    variants = {"full": full, **{f"skim@{t}": skim(t) for t in thresholds}}
    for fn in variants.values():  # warm-up: compile every bucket these windows need
        for x in inputs:
            fn(x)
    seconds = {k: 0.0 for k in variants}
    import os

    load_before = os.getloadavg()[0]
    niceness = os.nice(0)
    with _bench_lock(lock_timeout_s) as locked:
        load_locked = os.getloadavg()[0]
        for _ in range(repeats):
            for x in inputs:
                for name, fn in variants.items():
                    t0 = time.perf_counter()
                    fn(x)
                    seconds[name] += time.perf_counter() - t0
    per = {k: v / (len(inputs) * repeats) for k, v in seconds.items()}
    return {"windows": len(inputs), "repeats": repeats, "seconds_per_window": per,
            "speedup": {k: per["full"] / v for k, v in per.items() if k != "full"},
            "load_average_before": load_before, "load_average_at_lock": load_locked,
            "load_average_after": os.getloadavg()[0], "bench_lock_held": locked,
            "niceness": niceness}


# --------------------------------------------------------------------------------------------
# The experiment


def _lower_priority() -> None:
    import os

    try:
        os.nice(19 - os.nice(0))
    except OSError:  # pragma: no cover - platforms without nice
        pass


def run(config: SkimExperimentConfig) -> dict:
    t_start = time.perf_counter()
    tokenizer = plain_tokenizer()
    dev_examples = make_fact_qa(config.n_dev, seed=config.seed + 1000, context_tokens=config.context_tokens,
                                tokenizer=tokenizer)
    feats = dict(max_seq_len=config.max_seq_len, doc_stride=config.doc_stride)
    dev_features = featurize(dev_examples, tokenizer, **feats)
    figures: dict = {"label": config.label, "config": dataclasses.asdict(config), "paper": PAPER,
                     "data": {"train_examples": config.n_train, "dev_examples": len(dev_examples),
                              "dev_windows": len(dev_features),
                              "mean_dev_window_tokens": float(dev_features.num_tokens.mean())}}

    @functools.cache
    def train_features() -> QAFeatures:  # built only when something has to be trained
        train_examples = make_fact_qa(config.n_train, seed=config.seed, context_tokens=config.context_tokens,
                                      tokenizer=tokenizer)
        return featurize(train_examples, tokenizer, **feats)

    # Heavy work (training, accuracy sweeps) runs at the lowest CPU priority on this shared machine; the
    # wall-clock timing runs before that when the weights come from the cache, so it keeps normal priority.
    needs_training = any(p is None or not p.is_file() for p in
                         [cache_path(config, skim=True)] + ([cache_path(config, skim=False)] if config.train_vanilla
                                                            else []))
    if needs_training and config.lower_priority:
        _lower_priority()
    skim_model, skim_log, skim_seconds = trained_models(config, train_features, skim=True)
    figures["train"] = {"block_skim": {"seconds": skim_seconds, "log": skim_log, "from_cache": skim_log is None}}
    vanilla = None
    if config.train_vanilla:
        vanilla, vlog, vseconds = trained_models(config, train_features, skim=False)
        figures["train"]["vanilla"] = {"seconds": vseconds, "log": vlog, "from_cache": vlog is None}
    runner = SkimRunner(skim_model, layers=config.prune_layers)
    if config.timing_examples:
        figures["timing"] = time_batch1(runner, dev_features, [t for t in config.thresholds if t > 0],
                                        config.timing_examples, config.timing_repeats,
                                        lock_timeout_s=config.lock_timeout_s)
    if config.lower_priority:
        _lower_priority()

    full = evaluate_full(runner.full, dev_features, dev_examples, config.eval_batch_size)
    figures["block_skim_unpruned"] = {"exact_match": full["exact_match"], "f1": full["f1"]}
    sweep = []
    for t in config.thresholds:
        r = evaluate_skim(runner, dev_features, dev_examples, t, config.eval_batch_size, skim_model.qa_model.config)
        if t == 0.0:
            same = decode_answers(dev_features, r["start"], r["end"], dev_examples) == \
                decode_answers(dev_features, full["start"], full["end"], dev_examples)
            figures["threshold0_answers_identical"] = bool(same)
        sweep.append({k: v for k, v in r.items() if k not in ("start", "end")})
    figures["sweep"] = sweep
    figures["predictors"] = predictor_diagnostics(skim_model, dev_features, config.thresholds,
                                                  config.eval_batch_size) if config.diagnostics else {}
    if vanilla is not None:
        v_graph, v_state = nnx.split(vanilla)
        v_forward = jax.jit(lambda s, i, m, t: nnx.merge(v_graph, s)(i, m, t))
        v = evaluate_full(lambda i, m, t: v_forward(v_state, i, m, t), dev_features, dev_examples,
                          config.eval_batch_size)
        figures["vanilla"] = {"exact_match": v["exact_match"], "f1": v["f1"]}
    figures["checks"] = _checks(figures)
    figures["seconds"] = time.perf_counter() - t_start
    _write_reports(figures, config)
    return figures


def _best_operating_point(figures: dict) -> dict | None:
    """The largest-FLOPs-speedup threshold whose F1 is within 1 point of the unpruned model."""
    ref = figures["block_skim_unpruned"]["f1"]
    ok = [r for r in figures["sweep"] if r["threshold"] > 0 and r["f1"] >= ref - 1.0]
    return max(ok, key=lambda r: r["flops_speedup"]) if ok else None


def _checks(figures: dict) -> dict:
    best = _best_operating_point(figures)
    out = {"threshold0_answers_identical": figures.get("threshold0_answers_identical")}
    if best is None:
        out.update(threshold=None, note="no threshold > 0 keeps F1 within 1 point of the unpruned model",
                   flops_speedup_at_least_2_5=False, wall_clock_at_least_2=False)
    else:
        out.update(threshold=best["threshold"], f1=best["f1"], f1_unpruned=figures["block_skim_unpruned"]["f1"],
                   flops_speedup=best["flops_speedup"], flops_speedup_at_least_2_5=best["flops_speedup"] >= 2.5)
        if "timing" in figures:
            wall = figures["timing"]["speedup"].get(f"skim@{best['threshold']}")
            out.update(wall_clock_speedup=wall, wall_clock_at_least_2=wall is not None and wall >= 2.0)
    return out


def tables(figures: dict) -> list[tuple[str, list[str], list[list]]]:
    timing = figures.get("timing", {}).get("speedup", {})
    rows = [["paper BERT-base SQuAD, vanilla", "-", f"{PAPER['vanilla_f1']:.2f}", "1.00x", "-"],
            ["paper BERT-base SQuAD, Block-Skim", "-", f"{PAPER['block_skim_f1']:.2f}",
             f"{PAPER['block_skim_flops_speedup']:.2f}x", "-"]]
    if "vanilla" in figures:
        rows.append(["ours MiniLM, vanilla fine-tune", f"{figures['vanilla']['exact_match']:.2f}",
                     f"{figures['vanilla']['f1']:.2f}", "1.00x", "1.00x"])
    rows.append(["ours MiniLM, Block-Skim trained, no pruning", f"{figures['block_skim_unpruned']['exact_match']:.2f}",
                 f"{figures['block_skim_unpruned']['f1']:.2f}", "1.00x", "1.00x"])
    for r in figures["sweep"]:
        wall = timing.get(f"skim@{r['threshold']}")
        rows.append([f"ours Block-Skim, threshold {r['threshold']}", f"{r['exact_match']:.2f}", f"{r['f1']:.2f}",
                     f"{r['flops_speedup']:.2f}x", "-" if wall is None else f"{wall:.2f}x"])
    out = [(f"Block-Skim ({figures['label']}): built-in fact QA dev set, pruning after layers "
            f"{figures['config']['prune_layers']}", ["model", "EM", "F1", "FLOPs speedup", "wall-clock b=1"], rows)]
    diag = []
    for layer, rs in figures["predictors"].items():
        for r in rs:
            diag.append([layer, r["threshold"], f"{r['kept_fraction']:.3f}", f"{r['answer_block_recall']:.3f}"])
    out.append(("skim predictors on the unpruned forward", ["layer", "threshold", "kept fraction",
                                                             "answer-block recall"], diag))
    return out


def markdown(figures: dict, *, include_plot: bool = True) -> str:
    from scripts.report import markdown_table

    lines = [f"# Block-Skim on all-MiniLM-L6-v2 ({figures['label']})", ""]
    d, c = figures["data"], figures["config"]
    lines += [f"Built-in fact QA set: {d['train_examples']} train examples, "
              f"{d['dev_examples']} dev examples; windows of {c['max_seq_len']} tokens, mean dev window "
              f"{d['mean_dev_window_tokens']:.0f} tokens (blocks of 32). Fine-tuning: {c['train_steps']} steps of "
              f"batch {c['batch_size']}, lr {c['learning_rate']} (predictors {c['predictor_learning_rate']}), "
              f"embeddings {'frozen' if c['freeze_embeddings'] else 'trained'}; predictors trained after layers "
              f"{c['predictor_layers']}, pruning at inference after layers {c['prune_layers']}; alpha {c['alpha']}, "
              f"beta {c['beta']}, label rule '{c['label_rule']}'.", ""]
    if c["refine_epochs"]:
        lines += [f"After the joint fine-tune the pruning predictors (layers {c['prune_layers']}) were trained alone "
                  f"for {c['refine_epochs']} epochs on the cached attention of {c['refine_windows']} training windows, "
                  "encoder frozen. This deviates from the paper's purely joint training: our joint run is short "
                  "(CPU budget) and left the predictors undertrained, and with the encoder fixed the predictors "
                  "see exactly the attention they see at inference.", ""]
    for title, headers, rows in tables(figures):
        lines += [f"## {title}", "", markdown_table(headers, rows), ""]
    ch = figures["checks"]
    lines += ["## Checks (targets: >= 2.5x FLOPs and >= 2x wall-clock at batch 1 with F1 within 1 point of the "
              "unpruned model; threshold 0 gives identical answers)", "",
              "```", json.dumps(ch, indent=1, default=str), "```", ""]
    if "timing" in figures:
        t = figures["timing"]
        lines += [f"Wall-clock: {t['windows']} dev windows x {t['repeats']} at batch 1, each cut to whole blocks; "
                  f"load average {t['load_average_at_lock']:.2f} at the lock (held: {t['bench_lock_held']}, niceness "
                  f"{t['niceness']}); 2-core CPU shared with other agents, so "
                  "absolute times are noisy and the same-run ratios are what to trust.", ""]
    lines += ["FLOPs are counted from the tokens each layer actually processes at batch 1 (GEMMs + attention, "
              "predictor CNNs and span head included), the paper's metric; the paper's figures are BERT-base "
              "(12 layers) on SQuAD, ours a 6-layer MiniLM on the built-in set, so they sit beside each other, "
              "not against each other.", ""]
    if include_plot and figures.get("plot"):
        lines += [f"![accuracy vs speedup]({Path(figures['plot']).name})", ""]
    return "\n".join(lines)


def _write_reports(figures: dict, config: SkimExperimentConfig) -> None:
    from scripts import report

    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    fig, ax = report.new_figure(figsize=(5.5, 4))
    xs = [r["flops_speedup"] for r in figures["sweep"]]
    ys = [r["f1"] for r in figures["sweep"]]
    ax.plot(xs, ys, "o-", label="Block-Skim (FLOPs)")
    if "timing" in figures:
        sp = figures["timing"]["speedup"]
        pts = [(sp[f"skim@{r['threshold']}"], r["f1"]) for r in figures["sweep"] if f"skim@{r['threshold']}" in sp]
        if pts:
            ax.plot(*zip(*pts), "s--", label="Block-Skim (wall-clock, batch 1)")
    if "vanilla" in figures:
        ax.axhline(figures["vanilla"]["f1"], color="gray", ls=":", label="vanilla fine-tune")
    for r in figures["sweep"]:
        ax.annotate(str(r["threshold"]), (r["flops_speedup"], r["f1"]), fontsize=7)
    ax.set_xlabel("speedup over the unpruned model (x)")
    ax.set_ylabel("dev F1")
    ax.set_title(f"Block-Skim, MiniLM ({figures['label']})")
    ax.legend(fontsize=8)
    name = "skim" if figures["label"] == "full" else f"skim_{figures['label']}"
    figures["plot"] = str(report.save_figure(fig, outdir / f"{name}.png"))
    report.write_json(outdir / f"{name}.json", figures)
    (outdir / f"{name}.md").write_text(markdown(figures))
