"""Block-Skim on the real MiniLM: fine-tune for extractive QA with and without skim predictors, then
measure EM/F1, the FLOPs speedup counted from the tokens each layer processes, and wall-clock at batch 1.

`run(config) -> dict` is what `frugal skim` and the tour call. Training (`training`) runs through the
shared Trainer, whose workdirs under the cache folder are the weight cache, so a rerun only evaluates.
Evaluation, wall-clock timing (under the shared benchmark lock) and the reports live in `evaluation`, the
extended predictors' fit in `predictor_fit`.
"""

from __future__ import annotations

import contextlib
import functools
import time

import jax
from flax import nnx

from frugal.models.bert_qa import decode_answers
from frugal.scripts.systems.block_skim.config import SkimConfig
from frugal.scripts.systems.block_skim.evaluation import (
    PAPER,
    checks,
    evaluate_full,
    evaluate_skim,
    predictor_diagnostics,
    skim_loss_curve,
    time_batch1,
    write_reports,
)
from frugal.scripts.systems.block_skim.qa_data import QAFeatures, featurize, make_fact_qa, plain_tokenizer
from frugal.scripts.systems.block_skim.training import fully_cached, question_layers, trained_models
from frugal.transforms.block_skim import SkimRunner


def _lower_priority() -> None:
    import os

    with contextlib.suppress(OSError):  # platforms without nice
        os.nice(19 - os.nice(0))


def run(config: SkimConfig) -> dict:
    """Fine-tune (or restore), fit the predictors, sweep the thresholds on the dev set, time batch 1, and
    write skim[_LABEL].{json,md,png} into `config.outdir`; returns the figures."""
    from frugal.scripts.report import machine_description, machine_record

    before = machine_description()
    t_start = time.perf_counter()
    stages: dict[str, float] = {}
    clock = [t_start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(now - clock[0], 2)
        clock[0] = now

    tokenizer = plain_tokenizer()
    dev_examples = make_fact_qa(
        config.n_dev,
        seed=config.seed + 1000,
        context_tokens=config.context_tokens,
        tokenizer=tokenizer,
        distractors=config.distractors,
    )
    feats = dict(max_seq_len=config.max_seq_len, doc_stride=config.doc_stride)
    dev_features = featurize(dev_examples, tokenizer, **feats)
    figures: dict = {
        "label": config.label,
        "config": config.resolved(),  # train_steps and refine_epochs as run, never None (auto)
        "paper": PAPER,
        "data": {
            "train_examples": config.n_train,
            "dev_examples": len(dev_examples),
            "dev_windows": len(dev_features),
            "mean_dev_window_tokens": float(dev_features.num_tokens.mean()),
        },
    }
    lap("dev data")

    @functools.cache
    def train_features() -> QAFeatures:  # built only when something has to be trained
        train_examples = make_fact_qa(
            config.n_train,
            seed=config.seed,
            context_tokens=config.context_tokens,
            tokenizer=tokenizer,
            distractors=config.distractors,
        )
        return featurize(train_examples, tokenizer, **feats)

    # Heavy work (training, accuracy sweeps) can run at the lowest CPU priority; the wall-clock timing runs
    # before that when the weights come from the cache, so it keeps normal priority.
    skim_cached = fully_cached(config, vanilla=False)
    needs_training = not (skim_cached and fully_cached(config, vanilla=config.train_vanilla))
    if needs_training and config.lower_priority:
        _lower_priority()
    skim_model, skim_log, skim_seconds = trained_models(config, train_features, skim=True)
    figures["train"] = {"block_skim": {"seconds": skim_seconds, "log": skim_log, "from_cache": skim_cached}}
    figures["skim_loss_curve"] = skim_loss_curve(skim_log["joint"])
    lap("train block-skim")
    vanilla = None
    if config.train_vanilla:
        vanilla, vlog, vseconds = trained_models(config, train_features, skim=False)
        figures["train"]["vanilla"] = {"seconds": vseconds, "log": vlog, "from_cache": vlog["from_cache"]}
        lap("train vanilla")
    runner = SkimRunner(skim_model, layers=config.prune_layers)
    selected = None  # per-pruning-layer thresholds picked on held-out training windows
    if "question_predictors" in skim_log:
        selected = tuple(skim_log["question_predictors"]["selected_thresholds"])
        figures["selected_thresholds"] = {
            "per_layer": dict(zip(map(str, config.prune_layers), selected)),
            "held_out_train": skim_log["question_predictors"]["held_out"],
        }
    if config.timing_examples:
        figures["timing"] = time_batch1(
            runner,
            dev_features,
            [t for t in config.thresholds if t > 0] + ([selected] if selected else []),
            config.timing_examples,
            config.timing_repeats,
            lock_timeout_s=config.lock_timeout_s,
        )
        lap("timing")
    if config.lower_priority:
        _lower_priority()

    if config.eval_bucket_blocks > 1:  # batch-1 timing above ran unpadded
        runner = SkimRunner(skim_model, layers=config.prune_layers, bucket_blocks=config.eval_bucket_blocks)
    full = evaluate_full(runner.full, dev_features, dev_examples, config.eval_batch_size)
    figures["block_skim_unpruned"] = {"exact_match": full["exact_match"], "f1": full["f1"]}
    sweep = []
    for t in list(config.thresholds) + ([selected] if selected is not None else []):
        r = evaluate_skim(runner, dev_features, dev_examples, t, config.eval_batch_size, skim_model.qa_model.config)
        if t == 0.0:
            same = decode_answers(dev_features, r["start"], r["end"], dev_examples) == decode_answers(
                dev_features, full["start"], full["end"], dev_examples
            )
            figures["threshold0_answers_identical"] = bool(same)
        sweep.append({k: v for k, v in r.items() if k not in ("start", "end")})
    figures["sweep"] = sweep
    lap("dev sweep")
    if config.predictor_features.endswith("+match") and config.paper_thresholds:
        # The paper's predictor is still inside (the match heads read its logit): sweep it on the same windows.
        from frugal.scripts.systems.block_skim.predictor_fit import paper_predictors

        paper_runner = SkimRunner(
            paper_predictors(skim_model), layers=config.prune_layers, bucket_blocks=config.eval_bucket_blocks
        )
        figures["paper_predictor_sweep"] = [
            {
                k: v
                for k, v in evaluate_skim(
                    paper_runner, dev_features, dev_examples, t, config.eval_batch_size, skim_model.qa_model.config
                ).items()
                if k not in ("start", "end")
            }
            for t in config.paper_thresholds
        ]
        lap("paper predictor sweep")
    fitted = question_layers(config) if config.predictor_features.endswith("+match") else None  # others untrained
    figures["predictors"] = (
        predictor_diagnostics(skim_model, dev_features, config.thresholds, config.eval_batch_size, fitted)
        if config.diagnostics
        else {}
    )
    if vanilla is not None:
        v_graph, v_state = nnx.split(vanilla)
        v_forward = jax.jit(lambda s, i, m, t: nnx.merge(v_graph, s)(i, m, t))
        v = evaluate_full(
            lambda i, m, t: v_forward(v_state, i, m, t), dev_features, dev_examples, config.eval_batch_size
        )
        figures["vanilla"] = {"exact_match": v["exact_match"], "f1": v["f1"]}
    figures["checks"] = checks(figures)
    lap("diagnostics and vanilla")
    figures["stage_seconds"] = stages
    figures["seconds"] = time.perf_counter() - t_start
    figures["machine"] = machine_record(before)
    write_reports(figures, config)
    return figures
