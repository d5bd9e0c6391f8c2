"""Tokenizing and encoding for retrieval: fixed-length token arrays, per-layer pooled embeddings, and
the student's own byte-level BPE tokenizer.

Every text is tokenized once into a fixed-length (N, max_length) array, so a training batch is a
gather and every encoder call has one shape (one compilation). An embedding is the L2-normalized mean
of a layer's token states (sentence-transformers' pooling); a score is `scale` times the cosine, so
score distributions of models with different widths, depths and tokenizers live on one scale.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.models.bert import mean_pool

PAD_TOKEN = "[PAD]"


def fixed_tokens(tokenizer, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), int32 (len(texts), max_length): truncated to max_length, padded with id 0."""
    from tokenizers import Tokenizer

    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2")
    if isinstance(texts, str) or not len(texts):
        raise ValueError("texts must be a non-empty sequence of str")
    tok = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's padding settings stay as they were
    tok.no_padding()
    tok.enable_truncation(max_length)
    ids = np.zeros((len(texts), max_length), np.int32)
    mask = np.zeros((len(texts), max_length), np.int32)
    for i, encoding in enumerate(tok.encode_batch(list(texts))):
        n = len(encoding.ids)
        ids[i, :n] = encoding.ids
        mask[i, :n] = 1
    return ids, mask


def pooled_layers(model, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """(layers, batch, width): every layer's normalized mean-pooled embedding."""
    return jnp.stack([mean_pool(h, mask) for h in model.layer_outputs(ids, mask)])


@functools.partial(nnx.jit, static_argnames=("last_only",))
def _encode(model, ids, mask, last_only):
    if last_only:
        return mean_pool(model(ids, mask), mask)[None]
    return pooled_layers(model, ids, mask)


def encode(model, ids: np.ndarray, mask: np.ndarray, *, batch_size: int = 128, last_only: bool = False) -> np.ndarray:
    """(layers, N, width) float32 embeddings of pre-tokenized texts (layers = 1 with last_only), batched;
    the last batch is padded to full size so one program serves every batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    n = len(ids)
    out = []
    for start in range(0, n, batch_size):
        chunk_ids, chunk_mask = ids[start : start + batch_size], mask[start : start + batch_size]
        pad = batch_size - len(chunk_ids) if n > batch_size else 0
        if pad:
            chunk_ids = np.concatenate([chunk_ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
            chunk_mask = np.concatenate([chunk_mask, np.zeros((pad, ids.shape[1]), mask.dtype)])
        e = np.asarray(_encode(model, jnp.asarray(chunk_ids), jnp.asarray(chunk_mask), last_only))
        out.append(e[:, : e.shape[1] - pad])
    return np.concatenate(out, axis=1)


def train_bpe(texts: Sequence[str], vocab_size: int, *, min_frequency: int = 2):
    """A byte-level BPE tokenizer (GPT-2 style, `tokenizers`) trained on `texts`; id 0 is [PAD].

    Byte-level, so no text is ever out of vocabulary; nothing is shared with the teacher's WordPiece."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} must be >= 300 (256 bytes + merges)")
    if not len(texts):
        raise ValueError("texts is empty: the tokenizer needs training text")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    return tokenizer
