"""SALO: golden cycles of the reference performance model, utilization, fixed-point accuracy."""

import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.accel import salo

# Utilization printed by the reference performance_model.py for its three workloads.
REFERENCE_UTILIZATION = {"longformer": 0.738, "vil_stage1": 0.653, "vil_stage2": 0.640}


@pytest.mark.parametrize("key", sorted(salo.SALO_GOLDEN_CYCLES))
def test_golden_cycles_and_utilization(key):
    report = salo.salo_report(salo.SALO_WORKLOADS[key])
    golden = salo.SALO_GOLDEN_CYCLES[key]
    assert abs(report["cycles"] / golden - 1) < 0.01
    assert report["cycles"] == golden  # in fact exact
    assert report["utilization"] == pytest.approx(REFERENCE_UTILIZATION[key], abs=5e-4)
    assert report["energy_j"] == pytest.approx(2.06 * golden / 1e9)


def test_cycle_model_vmaps_and_matches_formula():
    seq = jnp.asarray([64, 100, 4096])
    got = jax.vmap(lambda s: salo.salo_cycles(s, 512, 12, 64))(seq)
    for s, c in zip([64, 100, 4096], np.asarray(got)):
        iters = math.ceil(s / 32) * math.ceil(512 / 32) * 12
        assert c == (64 + 1 + 1 + 32 + 1 + 64) * iters + iters - 1 + 32


def test_gpu_roofline_is_the_max_of_compute_and_memory():
    w = salo.SALO_WORKLOADS["longformer"]
    r = salo.gpu_roofline_seconds(w, salo.GPUS["A100"])
    assert r["seconds"] == max(r["compute_s"], r["memory_s"]) > 0
    assert r["flops"] == 4 * 4096 * (512 + 2) * 768
    faster = salo.gpu_roofline_seconds(w, salo.GPUS["H200"])
    assert faster["seconds"] <= r["seconds"]
    with pytest.raises(ValueError):
        salo.gpu_roofline_seconds(w, salo.GPUS["A100"], compute_efficiency=0)


def test_fixed_point_within_documented_bound(seq=64, heads=2, dim=16, window=9, globals_=2):
    q, k, v = jax.random.normal(jax.random.PRNGKey(seq), (3, seq, heads, dim))
    ref = salo.hybrid_attention_float(q, k, v, window=window, num_globals=globals_)
    fixed = salo.salo_attention_fixed_point(q, k, v, window=window, num_globals=globals_)
    err = np.abs(np.asarray(ref) - np.asarray(fixed))
    assert err.max() <= 0.05  # SALO_FIXED_POINT_MAX_ABS_ERROR in frugal.scripts.systems.accel.salo_table
    assert err.mean() <= 0.01
    # the fixed-point path is not float in disguise: coarser inputs give a larger error
    coarse = salo.salo_attention_fixed_point(
        q, k, v, window=window, num_globals=globals_, fmt=salo.FixedPointFormat(input_bits=5)
    )
    assert np.abs(np.asarray(ref) - np.asarray(coarse)).mean() > err.mean()


def test_exp2_piecewise_linear_is_accurate():
    fmt = salo.FixedPointFormat()
    one = 1 << fmt.frac_bits
    x = jnp.arange(-8 * one, 1, 7, dtype=jnp.int32)
    got = np.asarray(salo._exp2_fixed(x, fmt)) / one
    want = 2.0 ** (np.asarray(x) / one)
    assert np.max(np.abs(got - want)) < 3e-3


def test_hybrid_mask_pattern():
    mask = salo.hybrid_attention_mask(10, 3, 1)
    assert mask[0].all() and mask[:, 0].all()  # the global token sees and is seen by everyone
    assert mask[5, 4] and mask[5, 5] and mask[5, 6] and not mask[5, 7] and not mask[5, 3]
    with pytest.raises(ValueError):
        salo.hybrid_key_indices(10, 0, 1)


@pytest.mark.skipif(
    importlib.util.find_spec("frugal.transforms.attention") is None, reason="frugal.transforms.attention missing"
)
def test_float_reference_matches_transforms_attention():
    from frugal.transforms.attention import AttentionPattern, hybrid_attention

    q, k, v = jax.random.normal(jax.random.PRNGKey(1), (3, 48, 2, 8))
    ours = salo.hybrid_attention_float(q, k, v, window=9, num_globals=1)
    theirs = hybrid_attention(
        q[None], k[None], v[None], AttentionPattern(window=(4, 4), global_tokens=(0,)), impl="dense"
    )[0]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
