"""Block-reconstruction PTQ (frugal.transforms.quant.block_recon): folding, AdaRound, QDrop/AQuant runs, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.resnet import ResNet
from frugal.transforms.quant.aquant import BORDER_MARGIN, fake_quant_activation, grid_spec
from frugal.transforms.quant.block_recon import (
    ReconConfig,
    compiled_programs,
    float_network,
    init_weight_rounding,
    nearest_weight,
    quantize_resnet,
    rectified_sigmoid,
)
from frugal.transforms.quant.recon_cache import ReconCache

IMAGES = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (40, 12, 12, 3)), np.float32)
TINY = dict(
    weight_bits=2,
    act_bits=2,
    calibration_size=32,
    batch_size=8,
    iterations=60,
    chunk=30,
    weight_lr=1e-2,
    scale_lr=1e-3,
    progress=False,
)


def _randomize_batch_stats(model, seed=0):
    """Non-trivial running statistics, so BatchNorm folding is really exercised."""
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            shape = node.mean[...].shape
            node.mean[...] = jnp.asarray(rng.normal(0, 0.3, shape), jnp.float32)
            node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, shape), jnp.float32)
            node.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32)
            node.bias[...] = jnp.asarray(rng.normal(0, 0.2, shape), jnp.float32)
    model.eval()
    return model


@pytest.fixture(scope="module")
def model():
    # Two blocks: one with an identity shortcut, one strided with a 1x1 shortcut convolution.
    return _randomize_batch_stats(
        ResNet(block="basic", stage_sizes=(1, 1), stage_widths=(4, 8), stem="cifar", num_classes=10, rngs=nnx.Rngs(0))
    )


@pytest.fixture(scope="module")
def runs(model):
    out = {}
    for method in ("rtn", "qdrop", "aquant"):
        out[method] = quantize_resnet(model, IMAGES, ReconConfig(method=method, **TINY))
    return out


def test_folded_network_matches_the_model_basic_and_bottleneck(model):
    x = IMAGES[:4]
    np.testing.assert_allclose(
        np.asarray(float_network(model)(x)), np.asarray(model(jnp.asarray(x))), rtol=1e-4, atol=1e-4
    )
    bottleneck = ResNet(
        block="bottleneck", stage_sizes=(1, 1), stage_widths=(4, 4), stem="imagenet", num_classes=5, rngs=nnx.Rngs(1)
    )
    _randomize_batch_stats(bottleneck, seed=1)
    np.testing.assert_allclose(
        np.asarray(float_network(bottleneck)(x)), np.asarray(bottleneck(jnp.asarray(x))), rtol=1e-4, atol=1e-4
    )


def test_adaround_starts_at_the_float_weight_and_hard_rounds_to_nearest():
    w = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 4, 6))
    grid = grid_spec("int", 3)
    state = init_weight_rounding(w, grid)
    soft = (state["lo"] + (state["hi"] - state["lo"]) * rectified_sigmoid(state["v"]) - state["offset"]) * state[
        "scale"
    ]
    inside = (w / state["scale"] + state["offset"] >= 0) & (w / state["scale"] + state["offset"] <= 7)
    np.testing.assert_allclose(np.asarray(soft)[np.asarray(inside)], np.asarray(w)[np.asarray(inside)], atol=1e-5)
    hard = (state["lo"] + (state["hi"] - state["lo"]) * (state["v"] >= 0) - state["offset"]) * state["scale"]
    np.testing.assert_allclose(np.asarray(hard), np.asarray(nearest_weight(w, state, grid)), atol=1e-6)
    # Per-channel MSE search is never worse than using each channel's full range.
    full = jnp.max(w, axis=(0, 1, 2)) - jnp.min(w, axis=(0, 1, 2))
    naive_scale = full / 7
    naive = fake_quant_activation(w, naive_scale, jnp.round(-jnp.min(w, axis=(0, 1, 2)) / naive_scale), grid)
    err = lambda q: np.asarray(jnp.mean((q - w) ** 2, axis=(0, 1, 2)))
    assert np.all(err(nearest_weight(w, state, grid)) <= err(naive) + 1e-9)


def test_eight_bit_round_to_nearest_is_close_to_float(model):
    q, _ = quantize_resnet(
        model,
        IMAGES,
        ReconConfig(weight_bits=8, act_bits=8, method="rtn", calibration_size=32, batch_size=8, progress=False),
    )
    ref = np.asarray(float_network(model)(IMAGES))
    got = np.asarray(q(IMAGES))
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("method", ["qdrop", "aquant"])
def test_reconstruction_lowers_every_blocks_error(runs, method):
    _, log = runs[method]
    assert log["fallbacks"] == 0
    for block in log["blocks"]:
        assert block["kept"] and block["loss_final"] == block["loss_reconstructed"] < block["loss_rtn"], block
        assert 0.0 <= block["undecided_weights"] <= 1.0
        history = [h["recon_loss"] for h in block["history"]]
        assert len(history) == 2 and history[-1] < history[0], history
    rtn_blocks = runs["rtn"][1]["blocks"]
    # Same calibration data and initialization: the starting (round-to-nearest) errors agree.
    np.testing.assert_allclose(log["blocks"][0]["loss_rtn"], rtn_blocks[0]["loss_rtn"], rtol=1e-5)


def test_a_block_that_reconstructs_worse_keeps_round_to_nearest(model, runs):
    # A scale step of 10 in one iteration wrecks every activation quantizer, so every block's
    # reconstruction is worse than round-to-nearest and must be discarded.
    wrecked = dict(TINY, iterations=1, chunk=1, scale_lr=10.0)
    net, log = quantize_resnet(model, IMAGES, ReconConfig(method="qdrop", **wrecked))
    assert log["fallbacks"] == len(log["blocks"]) == 2
    for block in log["blocks"]:
        assert not block["kept"] and block["loss_reconstructed"] > block["loss_rtn"] == block["loss_final"]
    rtn_net, rtn_log = runs["rtn"]
    assert [b["loss_rtn"] for b in log["blocks"]] == [b["loss_rtn"] for b in rtn_log["blocks"]]
    np.testing.assert_array_equal(np.asarray(net(IMAGES)), np.asarray(rtn_net(IMAGES)))
    # Without the fallback the wrecked blocks are kept.
    _, kept_log = quantize_resnet(model, IMAGES, ReconConfig(method="qdrop", fallback_to_nearest=False, **wrecked))
    assert kept_log["fallbacks"] == 0
    assert all(b["loss_final"] == b["loss_reconstructed"] > b["loss_rtn"] for b in kept_log["blocks"])


def test_learned_borders_stay_in_zero_one_and_move(runs):
    net, _ = runs["aquant"]
    borders = [
        0.5 + (0.5 - BORDER_MARGIN) * np.tanh(np.asarray(a["border"]))
        for block in net.acts["blocks"]
        for a in block.values()
    ]
    values = np.concatenate([b.ravel() for b in borders])
    assert np.all(values > 0) and np.all(values < 1)
    assert np.any(np.abs(values - 0.5) > 1e-3)


def test_border_half_everywhere_gives_the_nearest_rounding_network(runs):
    net, _ = runs["aquant"]
    strip = lambda keep_border: [
        {
            name: (
                {**a, "border": jnp.zeros_like(a["border"])}
                if keep_border
                else {k: v for k, v in a.items() if k != "border"}
            )
            for name, a in block.items()
        }
        for block in net.acts["blocks"]
    ]
    half = dataclasses.replace(net, acts={**net.acts, "blocks": strip(True)})
    nearest = dataclasses.replace(net, acts={**net.acts, "blocks": strip(False)})
    np.testing.assert_array_equal(np.asarray(half(IMAGES)), np.asarray(nearest(IMAGES)))


def test_pipeline_is_deterministic_for_a_seed(model, runs):
    again, log = quantize_resnet(model, IMAGES, ReconConfig(method="aquant", **TINY))
    first, first_log = runs["aquant"]
    np.testing.assert_array_equal(np.asarray(again(IMAGES)), np.asarray(first(IMAGES)))
    assert [b["loss_final"] for b in log["blocks"]] == [b["loss_final"] for b in first_log["blocks"]]


class _OnlyActivation(nnx.Module):
    def __call__(self, x):
        return jax.nn.relu(x)


class _Mlp(nnx.Module):
    def __init__(self):
        self.dense = nnx.Linear(3, 2, rngs=nnx.Rngs(0))


def test_clear_errors(model):
    with pytest.raises(ValueError, match="fewer than one batch"):
        quantize_resnet(model, IMAGES[:4], ReconConfig(batch_size=8, progress=False))
    with pytest.raises(ValueError, match="fewer than one batch"):
        quantize_resnet(model, IMAGES, ReconConfig(calibration_size=4, batch_size=8, progress=False))
    for field, value in (("weight_bits", 1), ("act_bits", 9), ("first_last_bits", 0)):
        with pytest.raises(ValueError, match=f"{field}.*supported range 2..8"):
            ReconConfig(**{field: value})
    with pytest.raises(TypeError, match="weight_bits"):
        ReconConfig(weight_bits=2.5)
    with pytest.raises(ValueError, match="no quantizable layer"):
        quantize_resnet(_OnlyActivation(), IMAGES, ReconConfig(progress=False))
    with pytest.raises(ValueError, match="supports frugal ResNets"):
        quantize_resnet(_Mlp(), IMAGES, ReconConfig(progress=False))
    with pytest.raises(ValueError, match="method"):
        ReconConfig(method="adaquant")
    with pytest.raises(ValueError, match="rank 4"):
        quantize_resnet(model, IMAGES[0], ReconConfig(progress=False))


def _same_network(a, b):
    np.testing.assert_array_equal(np.asarray(a(IMAGES)), np.asarray(b(IMAGES)))


def test_qdrop_on_aquants_program_equals_its_own_border_free_program(model, runs):
    # Frozen borders sit at exactly 0.5 and pass no gradient on, so sharing AQuant's compiled program
    # must not change a single weight; the returned network carries no borders.
    own, own_log = quantize_resnet(model, IMAGES, ReconConfig(method="qdrop", shared_program=False, **TINY))
    shared, shared_log = runs["qdrop"]
    _same_network(own, shared)
    assert [b["loss_final"] for b in own_log["blocks"]] == [b["loss_final"] for b in shared_log["blocks"]]
    assert all(a.granularity is None for block in shared.spec.blocks for a in block.acts)
    assert all("border" not in a for block in shared.acts["blocks"] for a in block.values())


def test_one_program_per_block_shape_across_methods_and_seeds(model):
    # A setting none of the other tests use, so nothing is compiled for it yet: 2 block shapes in `model`.
    config = ReconConfig(method="aquant", border_granularity="level", **{**TINY, "weight_bits": 3, "act_bits": 3})
    before = compiled_programs()
    quantize_resnet(model, IMAGES, config)
    assert compiled_programs() - before == 2
    quantize_resnet(model, IMAGES, dataclasses.replace(config, method="qdrop", seed=5))
    quantize_resnet(model, IMAGES, dataclasses.replace(config, seed=7))
    assert compiled_programs() - before == 2
    # A border-free QDrop program is a program of its own.
    quantize_resnet(model, IMAGES, dataclasses.replace(config, method="qdrop", shared_program=False))
    assert compiled_programs() - before == 4


def test_block_cache_restores_every_block_and_resumes_a_partial_run(model, runs, tmp_path):
    config = ReconConfig(method="aquant", **TINY)
    cache = ReconCache(tmp_path / "blocks")
    first, first_log = quantize_resnet(model, IMAGES, config, block_cache=cache)
    _same_network(first, runs["aquant"][0])  # caching changes nothing
    assert len(cache) == 2 and not any(b.get("from_cache") for b in first_log["blocks"])
    again, log = quantize_resnet(model, IMAGES, config, block_cache=cache)
    assert all(b["from_cache"] for b in log["blocks"])
    _same_network(again, first)
    # A run killed after its first block: the second run restores block 1 and reconstructs block 2.
    (json_path,) = [p for p in (tmp_path / "blocks").glob("*.json") if p.name.endswith("block1.json")]
    json_path.unlink()
    resumed, log = quantize_resnet(model, IMAGES, config, block_cache=cache)
    assert [bool(b.get("from_cache")) for b in log["blocks"]] == [True, False]
    _same_network(resumed, first)
    # Another seed or another image set is another entry, never a stale hit.
    other, log = quantize_resnet(model, IMAGES, dataclasses.replace(config, seed=1), block_cache=cache)
    assert not any(b.get("from_cache") for b in log["blocks"]) and len(cache) == 4
    _, log = quantize_resnet(model, IMAGES[::-1].copy(), config, block_cache=cache)
    assert not any(b.get("from_cache") for b in log["blocks"])


def test_undecided_fraction_is_logged_per_chunk_and_matches_the_end(runs):
    for method in ("qdrop", "aquant"):
        for block in runs[method][1]["blocks"]:
            fractions = [h["undecided_weights"] for h in block["history"]]
            assert len(fractions) == TINY["iterations"] // TINY["chunk"]
            assert all(0.0 <= f <= 1.0 for f in fractions)
            assert fractions[-1] == pytest.approx(block["undecided_weights"])


def test_a_mesh_placed_model_compiles_each_block_program_once(caplog):
    """A model fitted by the Trainer carries NamedSharding on its 1-device mesh; the activations inherit
    it, so the reconstruction state must start on that mesh too, or step 2 compiles the program again."""
    import logging

    from jax.sharding import NamedSharding, PartitionSpec

    from frugal.scripts.harness import data_parallel_mesh

    placed = _randomize_batch_stats(
        ResNet(block="basic", stage_sizes=(1,), stage_widths=(4,), stem="cifar", num_classes=10, rngs=nnx.Rngs(0))
    )
    nnx.update(placed, jax.device_put(nnx.state(placed), NamedSharding(data_parallel_mesh(1), PartitionSpec())))
    # one block, at weight/act bits no other test uses: its program is compiled here, exactly once
    config = ReconConfig(method="aquant", **{**TINY, "weight_bits": 4, "act_bits": 4, "iterations": 4, "chunk": 2})
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        quantize_resnet(placed, IMAGES, config)
    compiles = [r.getMessage() for r in caplog.records if "_train_step" in r.getMessage()]
    compiles = [m for m in compiles if m.startswith("Compiling")]
    assert len(compiles) == 1, compiles
