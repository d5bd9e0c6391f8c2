"""CTT-Net and the fusion heads (models/ctt_net.py) against the reference's structure and a NumPy
attention, plus the properties each ablation promises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models import ctt_net

F = 12
FEATURE_H, VA_H, FEATURE_V, VA_V, GLOBAL = range(5)


def _inputs(batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        jnp.asarray(rng.normal(size=(batch, F)), jnp.float32),
        jnp.asarray(rng.normal(size=(batch, F)), jnp.float32),
        jnp.asarray(rng.uniform(0.05, 1.2, batch), jnp.float32),
    )


def _head(cls=ctt_net.CrossTokenHead, **kw):
    head = cls(F, dim=16, inner_dim=32, rngs=nnx.Rngs(0), **kw)
    head.eval()
    return head


def test_token_attention_matches_a_numpy_reference_with_the_reference_scale():
    att = ctt_net.TokenAttention(16, heads=4, inner_dim=32, dropout=0.0, scale="dim", rngs=nnx.Rngs(1))
    x = np.random.default_rng(2).normal(size=(2, 5, 16)).astype(np.float32)
    out, weights = att(jnp.asarray(x))
    wqkv = np.asarray(att.qkv.kernel[...])
    wo, bo = np.asarray(att.out.kernel[...]), np.asarray(att.out.bias[...])
    q, k, v = np.split(x @ wqkv, 3, axis=-1)
    expect_out = np.zeros_like(x)
    heads_out = []
    for h in range(4):
        sl = slice(8 * h, 8 * h + 8)
        logits = q[..., sl] @ k[..., sl].transpose(0, 2, 1) * 16**-0.5  # dim**-0.5, not dim_head**-0.5
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        np.testing.assert_allclose(np.asarray(weights[:, h]), w, rtol=1e-5, atol=1e-6)
        heads_out.append(w @ v[..., sl])
    expect_out = np.concatenate(heads_out, -1) @ wo + bo
    np.testing.assert_allclose(np.asarray(out), expect_out, rtol=1e-4, atol=1e-5)


def test_ctt_feature_tokens_never_read_each_other_but_full_attention_does():
    feat_h, feat_v, pre = _inputs()
    ctt = np.asarray(_head().attention_maps(feat_h, feat_v, pre))
    assert ctt[FEATURE_H, FEATURE_V] == 0 and ctt[FEATURE_V, FEATURE_H] == 0
    assert ctt[VA_H, FEATURE_V] > 0 and ctt[VA_V, FEATURE_H] > 0  # the swapped VA tokens cross over
    np.testing.assert_allclose(ctt.sum(1), 1.0, rtol=1e-5)
    full = np.asarray(_head(ctt_net.FullAttentionHead).attention_maps(feat_h, feat_v, pre))
    assert full[FEATURE_H, FEATURE_V] > 0 and full[FEATURE_V, FEATURE_H] > 0


def test_without_swap_the_streams_only_meet_at_the_readout():
    feat_h, feat_v, pre = _inputs()
    flow = np.asarray(_head(swap=False).attention_maps(feat_h, feat_v, pre))
    for a, b in ((FEATURE_H, FEATURE_V), (VA_H, FEATURE_V), (VA_H, VA_V), (VA_V, FEATURE_H)):
        assert flow[a, b] == 0 and flow[b, a] == 0


def test_swapping_routes_information_between_views():
    """With the swap, the read-out depends on both views; without any rounds nothing crosses
    before the read-out, yet both views still reach it (mean of the two VA tokens)."""
    feat_h, feat_v, pre = _inputs()
    head = _head()
    base = head(feat_h, feat_v, pre)
    assert float(jnp.abs(head(feat_h, feat_v + 1.0, pre) - base).max()) > 1e-4
    assert float(jnp.abs(head(feat_h + 1.0, feat_v, pre) - base).max()) > 1e-4


def test_round_blocks_are_shared_like_the_reference():
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert count(_head(rounds=1)) == count(_head(rounds=8))


def test_bounded_output_and_ctt_f_residual():
    feat_h, feat_v, pre = _inputs(batch=64)
    out = np.asarray(_head()(feat_h * 50, feat_v * 50, pre))
    assert np.all((out > 0) & (out < ctt_net.MAX_VA))
    head_f = _head(variant="ctt_f")
    assert head_f.rounds == 6 and head_f.output == "residual"
    out_f = np.asarray(head_f(feat_h * 50, feat_v * 50, pre))
    assert np.any((out_f < 0) | (out_f > ctt_net.MAX_VA))  # delta + pre: not bounded
    flow = np.asarray(head_f.attention_maps(*_inputs()))
    assert flow[FEATURE_H, FEATURE_V] == 0 and flow[GLOBAL, FEATURE_V] > 0  # the global token is per stream


def test_without_va_tokens_pre_op_va_enters_only_at_the_output():
    feat_h, feat_v, pre = _inputs()
    head = _head(va_tokens=False)
    delta = lambda p: jax.scipy.special.logit(head(feat_h, feat_v, p) / ctt_net.MAX_VA) - p
    np.testing.assert_allclose(np.asarray(delta(pre)), np.asarray(delta(pre * 0.3 + 0.2)), atol=1e-4)
    with_tokens = _head()
    d2 = lambda p: jax.scipy.special.logit(with_tokens(feat_h, feat_v, p) / ctt_net.MAX_VA) - p
    assert float(jnp.abs(d2(pre) - d2(pre * 0.3 + 0.2)).max()) > 1e-3


def test_baselines_ignore_what_they_must_not_see():
    feat_h, feat_v, pre = _inputs()
    late = ctt_net.LateFusionHead(F, dim=16, use_pre=False, rngs=nnx.Rngs(0))
    late.eval()
    np.testing.assert_allclose(np.asarray(late(feat_h, feat_v, pre)), np.asarray(late(feat_h, feat_v, pre * 0 + 1)))
    single = ctt_net.SingleViewHead(F, view="h", dim=16, rngs=nnx.Rngs(0))
    single.eval()
    np.testing.assert_allclose(np.asarray(single(feat_h, feat_v, pre)), np.asarray(single(feat_h, feat_v * 3, pre)))
    assert float(jnp.abs(single(feat_h, feat_v, pre) - single(feat_h, feat_v, pre + 0.3)).max()) > 1e-4


def test_two_view_model_and_input_errors():
    rngs = nnx.Rngs(0)
    bh, bv = ctt_net.view_backbone(width=4, rngs=rngs), ctt_net.view_backbone(width=4, rngs=rngs)
    model = ctt_net.TwoViewModel(bh, bv, ctt_net.LateFusionHead(bh.num_features, dim=8, rngs=rngs))
    model.eval()
    out = model(jnp.ones((3, 32, 64)), jnp.zeros((3, 32, 64)), jnp.full((3,), 0.4))
    assert out.shape == (3,)
    with pytest.raises(ValueError, match="scans must be"):
        model(jnp.ones((3, 32, 64)), jnp.zeros((3, 32, 32)), jnp.full((3,), 0.4))
    feat_h, feat_v, pre = _inputs()
    with pytest.raises(ValueError, match="pre_va must be"):
        _head()(feat_h, feat_v, pre[:2])
    with pytest.raises(ValueError, match="variant"):
        ctt_net.CrossTokenHead(F, variant="ctt_x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="view="):
        ctt_net.SingleViewHead(F, view="x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth"):
        ctt_net.view_backbone(depth=34, rngs=rngs)
