"""The teacher: all-MiniLM-L6-v2's per-layer embeddings of a retrieval set, cached, and optionally a
linear head per layer trained on the training queries.

LEAD's teacher is trained jointly with the student (arXiv 2212.05225; github.com/microsoft/SimXNS,
LEAD `--train_de`), and its reference code can add a linear layer on top of the encoder
(`add_linear`). A frozen MiniLM's intermediate layers rank poorly, so their score distributions are
weak targets and LEAD's re-weighting (softmax of -NLL / 10) barely tells them apart. `heads` keeps the
encoder frozen and fits one linear map per layer, initialized to the identity, with the contrastive
NLL on the cached embeddings: seconds instead of a CPU fine-tune of 22M parameters, and it makes every
layer a retriever of its own. Both teachers are reported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step
from frugal.scripts.systems.lead.encoders import encode, fixed_tokens
from frugal.transforms.retrieval_distill import candidate_scores, contrastive_nll


def digest(*parts) -> str:
    """A short stable hash of the parts' reprs: the cache key of teachers, sets, tokenizers and runs."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def teacher_embeddings(
    texts: tuple[str, ...], *, max_length: int, cache_dir: str | Path | None, batch_size: int = 64, progress=None
) -> np.ndarray:
    """(6, len(texts), 384) normalized per-layer MiniLM embeddings (float16 values, returned as float32), cached."""
    from frugal.models.bert import load_minilm, minilm_dir

    key = digest("minilm-layers-v1", str(minilm_dir().name), max_length, texts)
    path = Path(cache_dir) / f"teacher_{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        return np.load(path).astype(np.float32)
    model, tokenizer = load_minilm()
    ids, mask = fixed_tokens(tokenizer, texts, max_length)
    if progress:
        progress(f"teacher: encoding {len(texts)} texts with all-MiniLM-L6-v2 (every layer, {max_length} tokens)")
    # Rounded to float16 whether or not it is cached, so a first run and a cached rerun see the same values.
    out = encode(model, ids, mask, batch_size=batch_size).astype(np.float16)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out.astype(np.float32)


class LayerHeads(nnx.Module):
    """One (d, d) linear map per layer, identity at the start: heads(x (L, N, d)) -> normalized (L, N, d)."""

    def __init__(self, layers: int, width: int):
        self.kernel = nnx.Param(jnp.tile(jnp.eye(width, dtype=jnp.float32), (layers, 1, 1)))

    def __call__(self, x):
        y = jnp.einsum("lnd,lde->lne", x, self.kernel[...])
        return y / jnp.clip(jnp.linalg.norm(y, axis=-1, keepdims=True), 1e-12)


def fit_heads(
    teacher_q: np.ndarray,
    teacher_p: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    steps: int,
    batch_queries: int = 64,
    hard_negatives: int = 3,
    scale: float = 20.0,
    lr: float = 1e-3,
    seed: int = 0,
) -> LayerHeads:
    """Trains LayerHeads with every layer's contrastive NLL (in-batch + hard negatives) on cached
    embeddings: teacher_q (L, train queries, d), teacher_p (L, passages, d)."""
    import optax

    layers, n, width = teacher_q.shape
    group = 1 + hard_negatives
    if batch_queries > n:
        raise ValueError(f"batch_queries={batch_queries} exceeds the {n} training queries")

    def loss_fn(heads, batch, rng, constants):
        q = heads(constants["q"][:, batch["queries"]])
        p = heads(constants["p"][:, batch["groups"].reshape(-1)])
        nll = jax.vmap(lambda s: contrastive_nll(s, group))(scale * candidate_scores(q, p))
        return jnp.mean(nll), {"nll_last": nll[-1], "nll_first": nll[0]}

    def batch_at(step, rows):
        rng = np.random.default_rng([seed, step, 7])
        queries = rng.choice(n, batch_queries, replace=False)
        picks = np.argsort(rng.random((batch_queries, negatives.shape[1])), axis=1)[:, :hard_negatives]
        hard = np.take_along_axis(negatives[queries], picks, axis=1)
        groups = np.concatenate([positives[queries][:, None], hard], axis=1)
        return {"queries": queries[rows], "groups": groups[rows]}

    tx = optax.adamw(optax.cosine_decay_schedule(lr, max(steps, 1)), weight_decay=0.0)
    trainer = Trainer(
        TrainState(LayerHeads(layers, width), tx),
        loss_step(loss_fn, has_aux=True),
        config=TrainerConfig(num_steps=steps, seed=seed, progress=False, log_every=max(1, steps // 5)),
        constants={"q": jnp.asarray(teacher_q), "p": jnp.asarray(teacher_p)},
    )
    return trainer.run(batch_at, batch_queries).state.model


def apply_heads(heads: LayerHeads | None, embeddings: np.ndarray, *, batch: int = 4096) -> np.ndarray:
    """Embeddings (L, N, d) through the heads (unchanged without heads), in chunks of N."""
    if heads is None:
        return embeddings
    f = nnx.jit(lambda h, x: h(x))
    return np.concatenate(
        [np.asarray(f(heads, jnp.asarray(embeddings[:, i : i + batch]))) for i in range(0, embeddings.shape[1], batch)],
        axis=1,
    )
