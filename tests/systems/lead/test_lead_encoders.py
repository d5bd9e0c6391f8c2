"""Fixed-length tokens, batched per-layer encoding (independent of batch size and padding), the
student's own BPE tokenizer, and the teacher's per-layer heads (identity at the start, and trained
they turn a rotated copy of the queries into a retriever)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.bert import BertConfig, BertEncoder, mean_pool
from frugal.scripts.systems.lead.encoders import encode, fixed_tokens, train_bpe
from frugal.scripts.systems.lead.teacher import LayerHeads, apply_heads, fit_heads

TEXTS = [
    "Compute the inverse of a matrix.",
    "Return the sum of array elements over a given axis.",
    "Read a JSON document from a file and return the object it encodes, with all of its nested lists.",
    "Solve a linear system.",
    "Sort an array in place.",
]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(TEXTS * 3, 300, min_frequency=1)


def test_bpe_and_fixed_tokens(bpe):
    assert bpe.token_to_id("[PAD]") == 0 and bpe.get_vocab_size() <= 300
    assert bpe.decode(bpe.encode(TEXTS[0]).ids).strip() == TEXTS[0]
    bpe.enable_padding(pad_id=0, length=3)  # the caller's own setting survives fixed_tokens
    ids, mask = fixed_tokens(bpe, TEXTS, 12)
    assert ids.shape == mask.shape == (5, 12) and ids.dtype == np.int32
    lengths = [min(len(bpe.encode(t).ids), 12) for t in TEXTS]
    np.testing.assert_array_equal(mask.sum(1), lengths)
    assert (ids[mask == 0] == 0).all() and lengths[2] == 12  # the long text is truncated
    assert bpe.padding["length"] == 3
    bpe.no_padding()
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe(TEXTS, 100)
    with pytest.raises(ValueError, match="max_length=1"):
        fixed_tokens(bpe, TEXTS, 1)


def test_encode_is_independent_of_batching(bpe):
    cfg = BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    model = BertEncoder(cfg, rngs=nnx.Rngs(0))
    ids, mask = fixed_tokens(bpe, TEXTS, 24)
    layers = encode(model, ids, mask, batch_size=2)
    assert layers.shape == (2, 5, 16)
    np.testing.assert_allclose(np.linalg.norm(layers, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(encode(model, ids, mask, batch_size=8), layers, rtol=1e-5, atol=1e-6)
    last = encode(model, ids, mask, batch_size=3, last_only=True)
    reference = mean_pool(model(jnp.asarray(ids), jnp.asarray(mask)), jnp.asarray(mask))
    np.testing.assert_allclose(last[0], reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last[0], layers[-1], rtol=1e-5, atol=1e-6)
    # padding is invisible: the same text alone, padded to 24 or cut to its own length
    short = int(mask[3].sum())
    alone = encode(model, ids[3:4, :short], mask[3:4, :short])
    np.testing.assert_allclose(alone[:, 0], layers[:, 3], rtol=1e-4, atol=1e-5)


def test_layer_heads_start_at_identity_and_learn_to_drop_noise():
    rng = np.random.default_rng(0)
    layers, n, d = 2, 64, 8

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    # Half the dimensions carry what a query and its passage share, half independent loud noise: the
    # raw cosine mostly sees noise, a head (one map for queries and passages alike) can drop it.
    signal = rng.normal(size=(layers, n, d // 2))
    noise = lambda: 3.0 * rng.normal(size=(layers, n, d // 2))
    passages = unit(np.concatenate([signal, noise()], axis=-1))
    queries = unit(np.concatenate([signal + 0.1 * rng.normal(size=signal.shape), noise()], axis=-1))
    heads = LayerHeads(layers, d)
    np.testing.assert_allclose(apply_heads(heads, queries), queries, rtol=1e-5, atol=1e-6)
    assert apply_heads(None, queries) is queries

    def top1(q, p):
        return np.mean(np.argmax(np.einsum("lqd,lpd->lqp", q, p), axis=-1) == np.arange(n), axis=-1)

    positives = np.arange(n)
    negatives = np.stack([np.roll(np.arange(n), -i)[1:5] for i in range(n)])  # any other passages
    trained = fit_heads(queries, passages, positives, negatives, steps=150, batch_queries=16, lr=3e-2)
    before = top1(queries, passages)
    after = top1(apply_heads(trained, queries), apply_heads(trained, passages))
    assert (after > 0.9).all() and (before < 0.6).all(), (before, after)
    with pytest.raises(ValueError, match="batch_queries=65"):
        fit_heads(queries, passages, positives, negatives, steps=1, batch_queries=65)
