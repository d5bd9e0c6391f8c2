"""frugal.transforms.block_skim: predictor input, labels, loss and pruned inference against plain references.

A small random-init BERT (3 layers, hidden 64, 4 heads, blocks of 16) runs the mechanics; the pruned
forward is checked against an independent reference that keeps the full length and masks the pruned
tokens out of attention instead of removing them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.models.bert import BertConfig, BertEncoder
from frugal.models.bert_qa import BertForQuestionAnswering, attention_bias, best_spans, qa_loss
from frugal.transforms.block_skim import (
    BlockSkimConfig,
    SkimRunner,
    apply_block_skim,
    block_labels,
    block_valid,
    diagonal_blocks,
    encoder_layer_flops,
    joint_loss,
    question_features,
    question_mask_from,
    skim_flops,
    skim_loss,
)

BS = 16
SMALL = BertConfig(
    vocab_size=60,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=128,
)


def _small_skim_model(layers=(0, 1), seed=0):
    qa = BertForQuestionAnswering(BertEncoder(SMALL, rngs=nnx.Rngs(seed)), rngs=nnx.Rngs(seed + 1))
    model = apply_block_skim(qa, BlockSkimConfig(layers=layers, block_size=BS), seed=seed)
    # Make the random predictors decisive so thresholds in (0, 1) prune some blocks and keep others.
    for p in model.predictors:
        k = p.classifier.kernel
        k.set_value(k[...] * 40.0)
    return model


@pytest.fixture(scope="module")
def skim_model():
    return _small_skim_model()


@pytest.fixture(scope="module")
def runner(skim_model):
    return SkimRunner(skim_model)


def _batch(b=3, s=96, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, SMALL.vocab_size, (b, s)).astype(np.int32)
    mask = np.ones((b, s), np.int32)
    mask[1, 70:] = 0
    mask[2, 40:] = 0
    ids[mask == 0] = 0
    types = (np.arange(s)[None, :] >= 10).astype(np.int32).repeat(b, 0)
    qlen = np.array([10, 20, 10])[:b]
    return ids, mask, types, qlen


def test_diagonal_blocks_matches_loop():
    probs = jax.random.uniform(jax.random.key(0), (2, 3, 48, 48))
    out = np.asarray(diagonal_blocks(probs, 16))
    assert out.shape == (2, 3, 16, 16, 3)
    p = np.asarray(probs)
    for b in range(2):
        for k in range(3):
            block = p[b, :, k * 16 : (k + 1) * 16, k * 16 : (k + 1) * 16]
            np.testing.assert_array_equal(out[b, k], block.transpose(1, 2, 0))
    with pytest.raises(ValueError, match="block_size"):
        diagonal_blocks(probs, 20)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 63), st.integers(0, 20), st.sampled_from(["any", "more_than_one"]))
def test_block_labels_match_counting(start, length, rule):
    end = min(start + length, 63)
    labels = np.asarray(block_labels(np.array([start]), np.array([end]), 64, 16, rule=rule))[0]
    for k in range(4):
        count = sum(1 for t in range(k * 16, (k + 1) * 16) if start <= t <= end and end > 0)
        assert labels[k] == (count > (1 if rule == "more_than_one" else 0))


def test_block_labels_no_answer_window_and_bad_rule():
    assert np.asarray(block_labels(np.array([0]), np.array([0]), 64, 16)).sum() == 0
    with pytest.raises(ValueError, match="rule"):
        block_labels(np.array([1]), np.array([2]), 64, 16, rule="some")


def test_skim_loss_is_torch_weighted_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (2, 5))
    valid = np.ones((2, 5), np.float32)
    valid[1, 3:] = 0
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    w = np.where(labels > 0, 20.0, 1.0) * valid
    expected = (w * ce).sum() / w.sum()
    np.testing.assert_allclose(
        float(skim_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid), 20.0)), expected, rtol=1e-5
    )


def test_predictor_reads_only_diagonal_blocks(skim_model):
    predictor = nnx.clone(skim_model.predictors[0])
    predictor.eval()
    probs = jax.random.uniform(jax.random.key(2), (1, 4, 64, 64))
    logits = predictor(probs)
    assert logits.shape == (1, 4, 2)
    off_diagonal = 1.0 - np.kron(np.eye(4), np.ones((16, 16)))
    changed = probs + 0.5 * jnp.asarray(off_diagonal)[None, None]
    np.testing.assert_allclose(np.asarray(predictor(changed)), np.asarray(logits), atol=1e-6)
    # Each block is classified on its own: changing block 2 leaves the other blocks' logits alone.
    bumped = probs.at[:, :, 32:48, 32:48].add(1.0)
    diff = np.abs(np.asarray(predictor(bumped)) - np.asarray(logits)).max(-1)[0]
    assert diff[2] > 0 and np.all(diff[[0, 1, 3]] < 1e-6)


def test_threshold_zero_answers_equal_unskimmed(runner):
    ids, mask, types, qlen = _batch()
    full_start, full_end = runner.full(ids, mask, types)
    res = runner(ids, mask, types, qlen, 0.0)
    ok = mask > 0
    np.testing.assert_allclose(res.start_logits[ok], full_start[ok], atol=1e-5)
    np.testing.assert_allclose(res.end_logits[ok], full_end[ok], atol=1e-5)
    assert np.all(np.isneginf(res.start_logits[~ok]))
    context = (types > 0) & ok
    a = best_spans(res.start_logits, res.end_logits, context)
    b = best_spans(full_start, full_end, context)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # Every layer processed every real token (all-padding blocks are the only thing dropped).
    np.testing.assert_array_equal(res.tokens_per_layer[:, -1], mask.sum(-1))


def _masked_reference(model, ids, mask, types, kept_after):
    """Full-length forward where tokens pruned after layer p are masked out of attention from layer p+1 on."""
    qa = model.qa_model
    x = qa.encoder.embeddings(jnp.asarray(ids), jnp.asarray(types))
    cur = mask.copy()
    for i, layer in enumerate(qa.encoder.layers):
        x, _ = layer(x, attention_bias(jnp.asarray(cur)))
        if i in kept_after:
            cur = cur * np.repeat(kept_after[i], BS, axis=1)
    logits = np.asarray(qa.qa_outputs(x))
    return logits[..., 0], logits[..., 1], cur


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_pruned_forward_equals_masked_reference(skim_model, runner, threshold):
    ids, mask, types, qlen = _batch()
    res = runner(ids, mask, types, qlen, threshold)
    kept_after = dict(zip(skim_model.skim_config.layers, res.kept_blocks))
    ref_start, ref_end, final_mask = _masked_reference(skim_model, ids, mask, types, kept_after)
    live = final_mask > 0
    np.testing.assert_array_equal(np.isfinite(res.start_logits), live)
    np.testing.assert_allclose(res.start_logits[live], ref_start[live], atol=2e-5)
    np.testing.assert_allclose(res.end_logits[live], ref_end[live], atol=2e-5)
    # CLS/question blocks are always kept; later predictors only drop blocks earlier ones kept.
    assert res.kept_blocks[0][:, 0].all() and res.kept_blocks[0][1, 1]
    assert np.all(res.kept_blocks[1] <= res.kept_blocks[0])
    if threshold == 1.0:  # only the protected blocks survive
        np.testing.assert_array_equal(res.tokens_per_layer[:, -1], [16, 32, 16])
    else:
        assert res.tokens_per_layer[:, -1].sum() < res.tokens_per_layer[:, 0].sum()


def test_batched_equals_one_by_one(runner):
    ids, mask, types, qlen = _batch()
    res = runner(ids, mask, types, qlen, 0.5)
    for r in range(3):
        one = runner(ids[r : r + 1], mask[r : r + 1], types[r : r + 1], qlen[r : r + 1], 0.5)
        np.testing.assert_array_equal(np.isfinite(one.start_logits[0]), np.isfinite(res.start_logits[r]))
        live = np.isfinite(one.start_logits[0])
        np.testing.assert_allclose(one.start_logits[0][live], res.start_logits[r][live], atol=2e-5)
        np.testing.assert_array_equal(one.tokens_per_layer[0], res.tokens_per_layer[r])


def test_runner_layer_subset_and_bucketing(skim_model):
    ids, mask, types, qlen = _batch()
    only_first = SkimRunner(skim_model, layers=(0,), bucket_blocks=4)
    res = only_first(ids, mask, types, qlen, 1.0)
    assert len(res.kept_blocks) == 1
    # Rows keep 1, 2 and 1 blocks; bucket of 4 blocks -> 64 computed tokens per row after layer 0.
    np.testing.assert_array_equal(res.padded_tokens_per_layer, [96, 64, 64])
    np.testing.assert_array_equal(res.tokens_per_layer[:, 1], [16, 32, 16])
    with pytest.raises(ValueError, match="subset"):
        SkimRunner(skim_model, layers=(2,))
    with pytest.raises(ValueError, match="threshold"):
        only_first(ids, mask, types, qlen, 1.5)
    with pytest.raises(ValueError, match="multiple of block_size"):
        only_first(ids[:, :90], mask[:, :90], types[:, :90], qlen, 0.5)


def test_joint_loss_trains_predictors_and_leaves_input_alone():
    qa = BertForQuestionAnswering(BertEncoder(SMALL, rngs=nnx.Rngs(3)), rngs=nnx.Rngs(4))
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(qa, nnx.Param)))
    model = apply_block_skim(qa, BlockSkimConfig(layers=(0,), block_size=BS, alpha=0.1, beta=20.0))
    ids, mask, types, _ = _batch()
    batch = {
        "input_ids": jnp.asarray(ids),
        "attention_mask": jnp.asarray(mask),
        "token_type_ids": jnp.asarray(types),
        "start_positions": jnp.array([40, 0, 20]),
        "end_positions": jnp.array([42, 0, 21]),
    }
    (loss, parts), grads = nnx.value_and_grad(lambda m: joint_loss(m, batch, qa_loss), has_aux=True)(model)
    assert np.isclose(float(loss), float(parts["qa_loss"]) + 0.1 * float(parts["skim_loss"]), rtol=1e-5)
    g = nnx.to_pure_dict(grads)
    assert float(jnp.abs(g["predictors"][0]["classifier"]["kernel"]).max()) > 0
    # The skim loss reaches the encoder through the attention probabilities.
    assert float(jnp.abs(g["qa_model"]["encoder"]["layers"][0]["query"]["kernel"]).max()) > 0
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(qa, nnx.Param)))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert np.asarray(block_valid(jnp.asarray(mask), BS)).sum(-1).tolist() == [6, 5, 3]


def test_flops_counting():
    h, f = 64, 128
    assert encoder_layer_flops(32, h, f) == 2 * 32 * h * (4 * h + 2 * f) + 4 * 32 * 32 * h
    full = skim_flops([96, 96, 96], [], hidden=h, intermediate=f, num_heads=4, block_size=16)
    pruned = skim_flops([96, 32, 32], [6], hidden=h, intermediate=f, num_heads=4, block_size=16)
    assert pruned < full
    assert full == 3 * encoder_layer_flops(96, h, f) + 2 * 96 * h * 2


def test_config_validation():
    with pytest.raises(ValueError, match="layers"):
        BlockSkimConfig(layers=(1, 0))
    with pytest.raises(ValueError, match="block_size"):
        BlockSkimConfig(block_size=30)
    with pytest.raises(ValueError, match="label_rule"):
        BlockSkimConfig(label_rule="sum>1")
    with pytest.raises(ValueError, match="beta"):
        BlockSkimConfig(beta=0)
    qa = BertForQuestionAnswering(BertEncoder(SMALL, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="last layer"):
        apply_block_skim(qa, BlockSkimConfig(layers=(2,), block_size=BS))


def _question_features_loop(p, qmask, mask, bs):
    """Plain-NumPy reference of `question_features` (before the log)."""
    b_, h_, s_, _ = p.shape
    out = np.zeros((b_, s_ // bs, 4 * h_))
    for b in range(b_):
        q = np.flatnonzero(qmask[b])
        for k in range(s_ // bs):
            cols = np.arange(k * bs, (k + 1) * bs)
            rows = cols[mask[b, cols] > 0]
            for h in range(h_):
                to_block = p[b, h][np.ix_(q, cols)]
                out[b, k, h] = to_block.sum(1).mean()
                out[b, k, h_ + h] = to_block.max()
                if len(rows):
                    from_block = p[b, h][np.ix_(rows, q)]
                    out[b, k, 2 * h_ + h] = from_block.sum(1).mean()
                    out[b, k, 3 * h_ + h] = from_block.max()
    return out


def test_question_features_match_numpy_loops():
    ids, mask, types, _ = _batch(s=64)
    logits = jax.random.normal(jax.random.key(5), (3, 4, 64, 64))
    probs = jax.nn.softmax(jnp.where(jnp.asarray(mask)[:, None, None, :] > 0, logits, -1e9), -1)
    qmask = question_mask_from(mask, types)
    got = np.asarray(question_features(probs, qmask, jnp.asarray(mask), BS))
    expected = _question_features_loop(np.asarray(probs, np.float64), np.asarray(qmask), mask, BS)
    assert got.shape == (3, 4, 16)
    np.testing.assert_allclose(got, np.log(np.maximum(expected, 1e-6)), rtol=1e-4, atol=1e-5)


def test_question_predictor_classifies_blocks_independently_of_order():
    """Permuting context blocks (keys and queries together) permutes the logits and changes nothing else."""
    qa = BertForQuestionAnswering(BertEncoder(SMALL, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    model = apply_block_skim(qa, BlockSkimConfig(layers=(0,), block_size=BS, predictor_features="diagonal+question"))
    predictor = model.predictors[0]
    predictor.eval()
    assert predictor.classifier.kernel[...].shape[0] == 4 * (BS // 4) ** 2 + 4 * 4
    _, _, types, _ = _batch(s=64)
    types, mask = types[:1], np.ones((1, 64), np.int32)
    logits = jax.random.normal(jax.random.key(6), (1, 4, 64, 64))
    probs = jax.nn.softmax(logits, -1)
    qmask = question_mask_from(mask, types)
    base = np.asarray(predictor(probs, qmask, jnp.asarray(mask)))
    order = np.array([0, 3, 1, 2])  # block 0 holds the question; shuffle the context blocks
    tok = (order[:, None] * BS + np.arange(BS)).reshape(-1)
    shuffled = probs[:, :, tok][:, :, :, tok]
    out = np.asarray(predictor(shuffled, qmask[:, tok], jnp.asarray(mask)[:, tok]))
    np.testing.assert_allclose(out[0], base[0, order], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="question_mask"):
        predictor(probs)
    # Question features reach the logits: more question attention into block 2 moves its logits only.
    bumped = probs.at[:, :, :10, 32:48].add(0.5)
    diff = np.abs(np.asarray(predictor(bumped, qmask, jnp.asarray(mask))) - base).max(-1)[0]
    assert diff[2] > 0 and np.all(diff[[1, 3]] < 1e-6)
    with pytest.raises(ValueError, match="predictor_features"):
        BlockSkimConfig(predictor_features="question")


def test_widening_to_question_features_keeps_predictions(skim_model):
    from frugal.scripts.systems.block_skim.predictor_fit import with_predictor_features

    model = nnx.clone(skim_model)
    model.eval()
    widened = with_predictor_features(model, "diagonal+question")
    assert widened.skim_config.predictor_features == "diagonal+question"
    ids, mask, types, _ = _batch()
    _, _, before = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    _, _, after = widened(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    for a, b in zip(before, after):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    assert model.skim_config.predictor_features == "diagonal"  # the input is not changed


def _match_features_loop(h, qmask, mask, bs, top_k):
    """Plain-NumPy reference of `match_features`."""
    b, s, _ = h.shape
    k = s // bs
    unit = h / np.linalg.norm(h, axis=-1, keepdims=True)
    out = np.full((b, k, top_k), -1.0)
    for i in range(b):
        queries = [q for q in range(1, min(s, 64)) if qmask[i, q]]
        context = [t for t in range(s) if mask[i, t] and not qmask[i, t]]
        for blk in range(k):
            keys = [t for t in context if blk * bs <= t < (blk + 1) * bs]
            scores = sorted(
                (max((unit[i, q] @ unit[i, t] for t in keys), default=-1.0) for q in queries), reverse=True
            )[:top_k]
            out[i, blk, : len(scores)] = scores
    return out


def test_match_features_match_numpy_loop():
    from frugal.transforms.block_skim import match_features

    ids, mask, types, _ = _batch()
    hidden = np.random.default_rng(1).normal(size=ids.shape + (8,)).astype(np.float32)
    hidden[0, 50] = hidden[0, 3]  # a context token repeating a question token: similarity 1 in its block
    qmask = question_mask_from(mask, types)
    got = np.asarray(match_features(jnp.asarray(hidden), qmask, jnp.asarray(mask), BS, top_k=6))
    expected = _match_features_loop(hidden.astype(np.float64), np.asarray(qmask), mask, BS, 6)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0, 50 // BS, 0] == pytest.approx(1.0, abs=1e-5)


def test_block_context_neighbours_and_window_maximum():
    from frugal.transforms.block_skim import with_block_context

    feats = jnp.asarray(np.arange(12, dtype=np.float32).reshape(1, 4, 3))
    valid = jnp.asarray([[1.0, 1.0, 1.0, 0.0]])  # the last block is padding: not the window's best
    out = np.asarray(with_block_context(feats, valid))
    f = np.arange(12, dtype=np.float32).reshape(4, 3)
    rel = np.concatenate([f, f - f[2]], -1)
    zero = np.zeros((1, 6), np.float32)
    np.testing.assert_array_equal(
        out[0], np.concatenate([rel, np.concatenate([zero, rel[:-1]]), np.concatenate([rel[1:], zero])], -1)
    )


@pytest.fixture(scope="module")
def match_model(skim_model):
    from frugal.scripts.systems.block_skim.predictor_fit import with_predictor_features

    model = with_predictor_features(skim_model, "diagonal+question+match")
    for p in model.predictors:  # decisive random heads, as for the CNN predictors above
        p.match_head.out.kernel.set_value(p.match_head.out.kernel[...] * 40.0)
    return model


def test_match_predictor_prunes_like_the_unpruned_forward_says(match_model):
    ids, mask, types, qlen = _batch()
    runner = SkimRunner(match_model)
    res = runner(ids, mask, types, qlen, 0.5)
    _, _, skim = match_model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    # After the first pruning layer the runner keeps exactly what the unpruned forward's predictor says.
    keep0 = np.asarray(jax.nn.softmax(skim[0], -1)[..., 1]) >= 0.5
    protected = np.arange(mask.shape[1] // BS)[None, :] * BS < qlen[:, None]
    real = mask.reshape(mask.shape[0], -1, BS).max(-1) > 0
    np.testing.assert_array_equal(res.kept_blocks[0], (keep0 | protected) & real)
    assert 0 < res.kept_blocks[0][real].mean() < 1
    kept_after = dict(zip(match_model.skim_config.layers, res.kept_blocks))
    ref_start, _, final_mask = _masked_reference(match_model, ids, mask, types, kept_after)
    live = final_mask > 0
    np.testing.assert_allclose(res.start_logits[live], ref_start[live], atol=2e-5)
    zero = runner(ids, mask, types, qlen, 0.0)
    full_start, _ = runner.full(ids, mask, types)
    np.testing.assert_allclose(zero.start_logits[mask > 0], full_start[mask > 0], atol=1e-5)
    with pytest.raises(ValueError, match="hidden"):
        match_model.predictors[0](
            jnp.zeros((1, SMALL.num_attention_heads, 32, 32)), jnp.zeros((1, 32), bool), jnp.ones((1, 32))
        )


def test_match_predictor_flops_are_counted():
    from frugal.transforms.block_skim import predictor_flops

    plain = predictor_flops(16, 12)
    question = predictor_flops(16, 12, features="diagonal+question")
    match = predictor_flops(16, 12, features="diagonal+question+match")
    assert plain < question < match < encoder_layer_flops(512, 384, 1536) / 10


def test_paper_predictors_inside_a_match_model_predict_like_the_original(skim_model, match_model):
    from frugal.scripts.systems.block_skim.predictor_fit import paper_predictors

    ids, mask, types, _ = _batch()
    model = nnx.clone(skim_model)
    model.eval()
    _, _, before = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    _, _, after = paper_predictors(match_model)(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    for a, b in zip(before, after):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
