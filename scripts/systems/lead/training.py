"""Distilling a dense retriever: batches of candidate groups, the loss of each method, and the run.

A batch holds `q` training queries; each query's group is its positive passage and `hard_negatives`
passages drawn from its mined list (BM25's and the teacher's top ranks), and every other group serves as
in-batch negatives (`frugal.transforms.retrieval_distill`). The teacher is frozen and pre-encoded, so
its per-layer score distributions over the batch's candidates are gathered on the host and arrive in
the batch; the student is encoded in the step, every layer mean-pooled.

Methods (the loss terms of LEAD, Sun et al., arXiv 2212.05225, all weights 1 as in its scripts):
  none      contrastive NLL only (the student trained on the labels alone)
  response  + KL between the final layers' score distributions (response distillation)
  lead      + LEAD's layer-wise KL: K random layer pairs re-drawn every 10 steps, re-weighted by the
              teacher layers' own NLL at temperature 10
  lead_last + the layer-wise KL on the last K layers of each model (the reference's alternative)
  lead_flat + the layer-wise KL with equal pair weights (no re-weighting)
  mse       + embedding MSE to the teacher's final embedding (sentence-transformers' recipe; the student
              must have the teacher's width, i.e. the MiniLM-initialized student)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step
from frugal.scripts.systems.lead.encoders import pooled_layers
from frugal.transforms.retrieval_distill import (
    candidate_scores,
    contrastive_nll,
    embedding_mse,
    lead_loss,
    sample_layer_pairs,
    score_kl,
)

METHODS = {
    "none": "contrastive NLL only",
    "response": "+ final-layer score KL (response distillation)",
    "lead": "+ LEAD layer-wise score KL (random layers, re-weighted)",
    "lead_last": "+ layer-wise KL on the last K layers (re-weighted)",
    "lead_flat": "+ layer-wise KL on random layers, equal weights",
    "mse": "+ embedding MSE to the teacher (equal widths only)",
}


@dataclasses.dataclass(frozen=True)
class LossSettings:
    method: str
    student_layers: int
    teacher_layers: int
    scale: float = 20.0
    temperature: float = 1.0
    layer_temperature: float = 10.0
    num_pairs: int = 3
    resample_every: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: use one of {list(METHODS)}")
        if self.method.startswith("lead") and self.num_pairs > min(self.student_layers, self.teacher_layers):
            raise ValueError(
                f"num_pairs={self.num_pairs} is larger than a model's depth (student {self.student_layers}, "
                f"teacher {self.teacher_layers} layers); choose at most {min(self.student_layers, self.teacher_layers)}"
            )


def method_loss(
    settings: LossSettings, student_scores, batch: dict, group_size: int, embeddings=None
) -> tuple[jax.Array, dict]:
    """The method's loss from the student's per-layer scores (layers, q, q * group_size).

    batch["teacher_scores"] is (q, teacher layers, q * group_size); `embeddings` = (query, passage)
    final-layer student embeddings, needed only by "mse" (with batch["teacher_final"]).
    """
    s = settings
    teacher = jax.lax.stop_gradient(jnp.transpose(batch["teacher_scores"], (1, 0, 2)))  # (Lt, q, q*g)
    nll = contrastive_nll(student_scores[-1], group_size)
    loss = nll
    metrics = {"nll": nll}
    if s.method != "none":
        kd = score_kl(student_scores[-1], teacher[-1], s.temperature)
        loss = loss + kd
        metrics["kl_final"] = kd
    if s.method.startswith("lead"):
        # The draw's key comes from the batch's seed, so every seed shares one compiled step.
        layer_key = jax.random.fold_in(jax.random.key(1_000_003), batch["seed"][0])
        si, ti = sample_layer_pairs(
            layer_key,
            batch["step"][0],
            student_layers=s.student_layers,
            teacher_layers=s.teacher_layers,
            num_pairs=s.num_pairs,
            resample_every=s.resample_every,
            mode="last" if s.method == "lead_last" else "random",
        )
        layer_kl, info = lead_loss(
            student_scores,
            teacher,
            si,
            ti,
            group_size,
            temperature=s.temperature,
            layer_temperature=s.layer_temperature,
            reweight=s.method != "lead_flat",
        )
        loss = loss + layer_kl
        metrics["kl_layers"] = layer_kl
        metrics["max_pair_weight"] = jnp.max(info["weights"])
    if s.method == "mse":
        q_emb, p_emb = embeddings
        q = q_emb.shape[0]
        student = jnp.concatenate([q_emb[:, None], p_emb.reshape(q, group_size, -1)], axis=1)
        mse = embedding_mse(student, jax.lax.stop_gradient(batch["teacher_final"]))
        loss = loss + mse
        metrics["mse"] = mse
    return loss, metrics


def student_scores(model, batch: dict, scale: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(scores (layers, q, q * g), query embeddings (layers, q, d), passage embeddings (layers, q * g, d))."""
    q, g = batch["p_ids"].shape[:2]
    q_emb = pooled_layers(model, batch["q_ids"], batch["q_mask"])
    p_emb = pooled_layers(model, batch["p_ids"].reshape(q * g, -1), batch["p_mask"].reshape(q * g, -1))
    return scale * candidate_scores(q_emb, p_emb), q_emb, p_emb


def distill_loss(settings: LossSettings, group_size: int) -> Callable:
    """loss_fn(model, batch, rng, constants) -> (loss, metrics) for `loss_step`.

    batch: q_ids/q_mask (q, Lq); p_ids/p_mask (q, group_size, Lp); teacher_scores (q, teacher layers,
    q * group_size); teacher_final (q, group_size + 1, d_t) only for "mse" (query, then its group);
    step and seed (q,) each, the step number and run seed (LEAD's layer draw).
    """

    def loss_fn(model, batch, rng, constants):
        scores, q_emb, p_emb = student_scores(model, batch, settings.scale)
        return method_loss(settings, scores, batch, group_size, (q_emb[-1], p_emb[-1]))

    return loss_fn


@dataclasses.dataclass
class DistillData:
    """Pre-tokenized student inputs, cached teacher embeddings and mined negatives of one set."""

    q_ids: np.ndarray  # (train queries, Lq) student tokens
    q_mask: np.ndarray
    p_ids: np.ndarray  # (passages, Lp) student tokens
    p_mask: np.ndarray
    positives: np.ndarray  # (train queries,)
    negatives: np.ndarray  # (train queries, depth) mined candidates, positive excluded
    teacher_q: np.ndarray  # (teacher layers, train queries, d_t) normalized
    teacher_p: np.ndarray  # (teacher layers, passages, d_t) normalized

    def __post_init__(self):
        n = len(self.positives)
        if n == 0:
            raise ValueError("no training queries: distillation needs a set with training queries")
        if not (len(self.q_ids) == len(self.negatives) == self.teacher_q.shape[1] == n):
            raise ValueError("training queries, negatives and teacher query embeddings differ in number")


def batch_fn(data: DistillData, *, batch_queries: int, hard_negatives: int, scale: float, seed: int, method: str):
    """batch_at(step, rows) for `Trainer`: step `step`'s batch is a function of (seed, step) only, so a
    resumed run sees the same batches."""
    depth = data.negatives.shape[1]
    if hard_negatives > depth:
        raise ValueError(f"hard_negatives={hard_negatives} exceeds the {depth} mined candidates per query")
    n = len(data.positives)
    if batch_queries > n:
        raise ValueError(f"batch_queries={batch_queries} exceeds the {n} training queries")
    group = 1 + hard_negatives

    def batch_at(step: int, rows: slice):
        rng = np.random.default_rng([seed, step])
        queries = rng.choice(n, batch_queries, replace=False)
        picks = np.argsort(rng.random((batch_queries, depth)), axis=1)[:, :hard_negatives]
        hard = np.take_along_axis(data.negatives[queries], picks, axis=1)
        groups = np.concatenate([data.positives[queries][:, None], hard], axis=1)  # (q, g)
        flat = groups.reshape(-1)
        tq, tp = data.teacher_q[:, queries], data.teacher_p[:, flat]  # (Lt, q, d), (Lt, q*g, d)
        teacher_scores = scale * np.einsum("lqd,lpd->qlp", tq, tp)
        batch = {
            "q_ids": data.q_ids[queries],
            "q_mask": data.q_mask[queries],
            "p_ids": data.p_ids[groups],
            "p_mask": data.p_mask[groups],
            "teacher_scores": teacher_scores.astype(np.float32),
            "step": np.full((batch_queries,), step, np.int32),
            "seed": np.full((batch_queries,), seed, np.int32),
        }
        if method == "mse":
            batch["teacher_final"] = np.concatenate([tq[-1][:, None], tp[-1].reshape(batch_queries, group, -1)], 1)
        return {k: v[rows] for k, v in batch.items()}

    return batch_at, group


def make_optimizer(lr: float, steps: int, *, warmup_fraction: float = 0.1, weight_decay: float = 0.01):
    warmup = max(1, int(warmup_fraction * steps))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay))


def distill(
    student,
    data: DistillData,
    settings: LossSettings,
    *,
    steps: int,
    batch_queries: int,
    hard_negatives: int,
    lr: float,
    workdir=None,
    progress: bool = False,
    step_cache: dict | None = None,
):
    """Trains a copy of `student` (the Trainer holds its own arrays) and returns (trained student, history)."""
    batch_at, group = batch_fn(
        data,
        batch_queries=batch_queries,
        hard_negatives=hard_negatives,
        scale=settings.scale,
        seed=settings.seed,
        method=settings.method,
    )
    # One step function and optimizer object per (settings minus seed, sizes): seeds then share one
    # compiled step (the Trainer caches it by these objects).
    key = (dataclasses.replace(settings, seed=0), group, lr, steps)
    cache = step_cache if step_cache is not None else {}
    if key not in cache:
        cache[key] = (loss_step(distill_loss(settings, group), has_aux=True), make_optimizer(lr, steps))
    step_fn, tx = cache[key]
    trainer = Trainer(
        TrainState(student, tx),
        step_fn,
        config=TrainerConfig(
            num_steps=steps,
            seed=settings.seed,
            log_every=max(1, steps // 10),
            progress=progress,
            progress_label=f"{settings.method} seed {settings.seed}",
        ),
        workdir=workdir,
    )
    result = trainer.run(batch_at, batch_queries)
    return result.state.model, result.history
