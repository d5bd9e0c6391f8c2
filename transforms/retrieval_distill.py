"""Losses for training and distilling dense retrievers over a batch of candidate passages.

A batch holds `q` queries and `q * s` passages: query i's own group is passages i*s .. i*s + s - 1,
its positive first and s - 1 hard negatives after it; every other query's group serves as in-batch
negatives. Scores are dot products of embeddings, so each query gets a distribution over all q * s
candidates. These are the losses of LEAD (Sun et al., WSDM 2024, arXiv 2212.05225; reference code
github.com/microsoft/SimXNS/tree/main/LEAD, `util.py`):

* `contrastive_nll`: the negative log-likelihood of the positive among all candidates (DPR-style).
* `score_kl`: response distillation, KL(teacher || student) between final-layer score distributions,
  teacher scores divided by a temperature, averaged over queries (torch's `kl_div(..., "batchmean")`).
* `lead_loss`: layer-wise distillation. K student layers and K teacher layers are drawn at random
  (`sample_layer_pairs`), each set sorted so the pairs keep the models' order, and each pair adds the KL
  between that student layer's and that teacher layer's score distributions. With `reweight`, pair k is
  weighted by softmax_k(-NLL_k / layer_temperature), NLL_k being the contrastive NLL of teacher layer
  k's own scores: layers that rank the positive better count more. The weights carry no gradient.
  Only score distributions over shared candidates meet, never hidden vectors, so teacher and student
  may differ in width, depth and tokenizer.
* `embedding_mse`: the practitioners' baseline (sentence-transformers' distillation recipe), the mean
  squared difference of student and teacher embeddings; it needs equal widths.

All are pure functions of arrays (jit-, grad- and vmap-able); layer indices may be traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _group_size(scores: jax.Array, group_size: int) -> int:
    if scores.ndim != 2:
        raise ValueError(f"scores must be (queries, candidates), got shape {scores.shape}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size={group_size!r} must be an int >= 1 (one positive + hard negatives)")
    if scores.shape[1] != scores.shape[0] * group_size:
        raise ValueError(
            f"scores {scores.shape}: with {scores.shape[0]} queries and group_size={group_size} there must be "
            f"{scores.shape[0] * group_size} candidates (each query's positive and hard negatives, in order)"
        )
    return group_size


def candidate_scores(queries: jax.Array, passages: jax.Array) -> jax.Array:
    """(q, d) queries x (q * s, d) passages -> (q, q * s) dot-product scores; leading axes (layers) broadcast."""
    if queries.shape[-1] != passages.shape[-1]:
        raise ValueError(f"queries {queries.shape} and passages {passages.shape} must share the embedding width")
    return jnp.einsum("...qd,...pd->...qp", queries, passages)


def positive_index(num_queries: int, group_size: int) -> jax.Array:
    """The column of each query's positive: i * group_size."""
    return jnp.arange(num_queries) * group_size


def contrastive_nll(scores: jax.Array, group_size: int) -> jax.Array:
    """Mean over queries of -log softmax(scores)[positive]; scores (q, q * group_size)."""
    group_size = _group_size(scores, group_size)
    log_p = jax.nn.log_softmax(scores.astype(jnp.float32), axis=-1)
    positives = positive_index(scores.shape[0], group_size)
    return -jnp.mean(jnp.take_along_axis(log_p, positives[:, None], axis=-1))


def score_kl(student_scores: jax.Array, teacher_scores: jax.Array, temperature: float = 1.0) -> jax.Array:
    """KL(softmax(teacher / T) || softmax(student)), summed over candidates and averaged over queries.

    As in the reference, only the teacher's scores are divided by the temperature (T = 1 there). No
    gradient reaches the teacher's scores through the target unless the caller wants it (joint
    training); wrap them in `jax.lax.stop_gradient` for a frozen teacher.
    """
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"student {student_scores.shape} and teacher {teacher_scores.shape} scores must match")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    log_q = jax.nn.log_softmax(student_scores.astype(jnp.float32), axis=-1)
    log_p = jax.nn.log_softmax(teacher_scores.astype(jnp.float32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q)) / student_scores.shape[0]


def sample_layer_pairs(
    key: jax.Array,
    step,
    *,
    student_layers: int,
    teacher_layers: int,
    num_pairs: int,
    resample_every: int = 10,
    mode: str = "random",
) -> tuple[jax.Array, jax.Array]:
    """K student and K teacher layer indices (each sorted), paired in order.

    "random" (LEAD's default): K distinct layers of each model drawn uniformly, fixed for
    `resample_every` steps (the reference re-draws every 10 steps), so the draw depends only on `key`
    and `step // resample_every`. "last": the last K layers of each model (the reference's
    alternative). Layer i is the output of block i + 1, so index depth - 1 is the final layer.
    """
    for name, depth in (("student_layers", student_layers), ("teacher_layers", teacher_layers)):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"{name}={depth!r} must be an int >= 1")
    if not isinstance(num_pairs, int) or num_pairs < 1:
        raise ValueError(f"num_pairs={num_pairs!r} must be an int >= 1")
    if num_pairs > min(student_layers, teacher_layers):
        raise ValueError(
            f"num_pairs={num_pairs} is larger than a model's depth (student {student_layers}, "
            f"teacher {teacher_layers} layers); choose at most {min(student_layers, teacher_layers)}"
        )
    if not isinstance(resample_every, int) or resample_every < 1:
        raise ValueError(f"resample_every={resample_every!r} must be an int >= 1")
    if mode == "last":
        return (
            jnp.arange(student_layers - num_pairs, student_layers),
            jnp.arange(teacher_layers - num_pairs, teacher_layers),
        )
    if mode != "random":
        raise ValueError(f"mode={mode!r}: use 'random' or 'last'")
    round_key = jax.random.fold_in(key, jnp.asarray(step) // resample_every)
    k_student, k_teacher = jax.random.split(round_key)

    def draw(k, depth):
        return jnp.sort(jax.random.choice(k, depth, (num_pairs,), replace=False))

    return draw(k_student, student_layers), draw(k_teacher, teacher_layers)


def lead_loss(
    student_layer_scores: jax.Array,
    teacher_layer_scores: jax.Array,
    student_index: jax.Array,
    teacher_index: jax.Array,
    group_size: int,
    *,
    temperature: float = 1.0,
    layer_temperature: float = 10.0,
    reweight: bool = True,
    pair_weight: float = 1.0,
) -> tuple[jax.Array, dict]:
    """LEAD's layer-wise score-distribution loss.

    Args:
      student_layer_scores: (student layers, q, q * group_size) scores of every student layer.
      teacher_layer_scores: (teacher layers, q, q * group_size) scores of every teacher layer.
      student_index, teacher_index: (K,) paired layer indices (`sample_layer_pairs`).
      group_size: candidates per query (one positive + hard negatives).
      temperature: divides the teacher's scores in each KL (the reference's T, 1).
      layer_temperature: tau of the re-weighting softmax over -NLL (the reference's 10).
      reweight: weight pairs by teacher-layer quality; otherwise every pair gets `pair_weight`.

    Returns:
      (loss, {"pair_kl": (K,), "weights": (K,)}).
    """
    if student_layer_scores.ndim != 3 or teacher_layer_scores.ndim != 3:
        raise ValueError(
            "layer scores must be (layers, queries, candidates); got "
            f"{student_layer_scores.shape} and {teacher_layer_scores.shape}"
        )
    if student_layer_scores.shape[1:] != teacher_layer_scores.shape[1:]:
        raise ValueError(
            f"student {student_layer_scores.shape} and teacher {teacher_layer_scores.shape} layer scores must "
            "cover the same queries and candidates"
        )
    _group_size(student_layer_scores[0], group_size)
    if jnp.shape(student_index) != jnp.shape(teacher_index) or jnp.ndim(student_index) != 1:
        raise ValueError(f"student_index {jnp.shape(student_index)} and teacher_index must be (K,) each")
    if not layer_temperature > 0:
        raise ValueError(f"layer_temperature={layer_temperature!r} must be > 0")
    student = student_layer_scores[jnp.asarray(student_index)]
    teacher = teacher_layer_scores[jnp.asarray(teacher_index)]
    pair_kl = jax.vmap(lambda s, t: score_kl(s, t, temperature))(student, teacher)
    if reweight:
        teacher_nll = jax.vmap(lambda t: contrastive_nll(t, group_size))(jax.lax.stop_gradient(teacher))
        weights = jax.nn.softmax(-teacher_nll / layer_temperature)
    else:
        weights = jnp.full(pair_kl.shape, pair_weight, jnp.float32)
    weights = jax.lax.stop_gradient(weights)
    return jnp.sum(weights * pair_kl), {"pair_kl": pair_kl, "weights": weights}


def embedding_mse(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Mean squared difference of student and teacher embeddings (sentence-transformers' recipe)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {student.shape} and teacher {teacher.shape} embeddings must match (embedding MSE needs one "
            "width; LEAD's score distributions do not)"
        )
    return jnp.mean((student.astype(jnp.float32) - teacher.astype(jnp.float32)) ** 2)


__all__ = [
    "candidate_scores",
    "contrastive_nll",
    "embedding_mse",
    "lead_loss",
    "positive_index",
    "sample_layer_pairs",
    "score_kl",
]
