"""Longformer (HF checkpoint layout, safetensors loading) and ViL models, and their short training runs."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from frugal.models.longformer import (
    PROJECTIONS,
    LongformerConfig,
    LongformerModel,
    LongformerSelfAttention,
    from_pretrained,
    hf_parameter_names,
    load_hf_state_dict,
    load_safetensors,
    longformer_self_attention,
    to_hf_state_dict,
)
from frugal.models.vil import ViL, ViLConfig, ViLStage
from frugal.scripts.systems.attention import peer_goldens
from frugal.transforms.attention import AttentionPattern, hybrid_attention

TINY = LongformerConfig(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=80,
    attention_window=8,
)

# The state-dict keys of transformers' LongformerModel(add_pooling_layer=False) for one layer, as
# printed by transformers 5.24 (`sorted(model.state_dict())`, position_ids buffers excluded).
HF_KEYS_ONE_LAYER = sorted(
    [
        "embeddings.LayerNorm.bias",
        "embeddings.LayerNorm.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.word_embeddings.weight",
        *[
            f"encoder.layer.0.attention.self.{m}.{p}"
            for m in ("query", "key", "value", "query_global", "key_global", "value_global")
            for p in ("weight", "bias")
        ],
        "encoder.layer.0.attention.output.dense.weight",
        "encoder.layer.0.attention.output.dense.bias",
        "encoder.layer.0.attention.output.LayerNorm.weight",
        "encoder.layer.0.attention.output.LayerNorm.bias",
        "encoder.layer.0.intermediate.dense.weight",
        "encoder.layer.0.intermediate.dense.bias",
        "encoder.layer.0.output.dense.weight",
        "encoder.layer.0.output.dense.bias",
        "encoder.layer.0.output.LayerNorm.weight",
        "encoder.layer.0.output.LayerNorm.bias",
    ]
)


def _ids(seed=0, batch=2, n=30):
    ids = np.random.default_rng(seed).integers(3, TINY.vocab_size, size=(batch, n))
    ids[1, -6:] = TINY.pad_token_id
    return jnp.asarray(ids)


def test_parameter_names_and_shapes_match_hf_layout():
    assert hf_parameter_names(TINY) == HF_KEYS_ONE_LAYER
    state = to_hf_state_dict(LongformerModel(TINY, rngs=nnx.Rngs(0)))
    assert state["encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)  # torch (out, in)
    assert state["embeddings.position_embeddings.weight"].shape == (80, 32)


def test_safetensors_round_trip_with_prefix_and_extras(tmp_path):
    from safetensors.numpy import save_file

    source = LongformerModel(TINY, rngs=nnx.Rngs(1))
    tensors = {f"longformer.{k}": v for k, v in to_hf_state_dict(source).items()}
    tensors["pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        '{"model_type": "longformer", "vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 1, '
        '"num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 80, '
        '"attention_window": [8], "type_vocab_size": 1, "pad_token_id": 1}'
    )
    target = LongformerModel(TINY, rngs=nnx.Rngs(2))
    report = load_safetensors(target, tmp_path / "model.safetensors")
    assert report["missing"] == [] and report["unused"] == ["pooler.dense.weight"]
    ids = _ids()
    expected = _encode(source, ids, (0,), "dense")
    np.testing.assert_array_equal(_encode(target, ids, (0,), "dense"), expected)
    np.testing.assert_array_equal(_encode(from_pretrained(tmp_path), ids, (0,), "dense"), expected)


def test_bad_checkpoints_raise():
    model = LongformerModel(TINY, rngs=nnx.Rngs(0))
    tensors = to_hf_state_dict(model)
    with pytest.raises(ValueError, match="checkpoint shape"):
        load_hf_state_dict(model, {**tensors, "embeddings.word_embeddings.weight": np.zeros((3, 32), np.float32)})
    del tensors["encoder.layer.0.output.dense.bias"]
    with pytest.raises(ValueError, match="lacks 1 parameter"):
        load_hf_state_dict(model, tensors)
    with pytest.raises(FileNotFoundError, match="no safetensors file"):
        load_safetensors(model, "/nonexistent/model.safetensors")
    with pytest.raises(ValueError, match="attention_window=7 must be a positive even number"):
        LongformerConfig(attention_window=7)


def _encode(model, ids, global_tokens, impl):
    return nnx.jit(lambda m, x: m(x, global_tokens=global_tokens, impl=impl))(model, ids)


def test_longformer_banded_equals_dense():
    # (the Pallas path is checked against dense in test_attention_pallas.py)
    model = LongformerModel(TINY, rngs=nnx.Rngs(3))
    ids = _ids(4, n=40)
    dense = _encode(model, ids, (0, 9), "dense")
    np.testing.assert_allclose(_encode(model, ids, (0, 9), "banded"), dense, atol=1e-5)


def test_longformer_matches_hugging_face_when_available():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LongformerConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        attention_window=[4, 8],
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    hf = transformers.LongformerModel(hf_config, add_pooling_layer=False).eval()
    ours = LongformerModel(
        LongformerConfig(
            vocab_size=40,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=80,
            attention_window=(4, 8),
        ),
        rngs=nnx.Rngs(0),
    )
    load_hf_state_dict(ours, {k: v.numpy() for k, v in hf.state_dict().items()})
    ids = np.array(_ids(5, n=24))
    mask = (ids != 1).astype(np.int64)
    mask[:, [0, 5]] = 2  # HF: 2 = global attention
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    got = np.asarray(_encode(ours, jnp.asarray(ids), (0, 5), "banded"))
    real = ids != 1
    np.testing.assert_allclose(got[real], expected[real], atol=2e-4)


@pytest.fixture(scope="module")
def hf_golden():
    """Hugging Face's LongformerSelfAttention on a small random layer (see tests/data/README.md)."""
    return dict(np.load(Path(__file__).parent / "data" / peer_goldens.LONGFORMER_FILE, allow_pickle=False))


def _golden_layer(golden):
    config = LongformerConfig(
        vocab_size=8,
        hidden_size=int(golden["hidden_size"]),
        num_hidden_layers=1,
        num_attention_heads=int(golden["num_attention_heads"]),
        intermediate_size=8,
        max_position_embeddings=8,
        attention_window=int(golden["attention_window"]),
    )
    layer = LongformerSelfAttention(config, config.windows[0], rngs=nnx.Rngs(0))
    for name in PROJECTIONS:
        getattr(layer, name).weight.set_value(jnp.asarray(golden[f"{name}.weight"]))
        getattr(layer, name).bias.set_value(jnp.asarray(golden[f"{name}.bias"]))
    return layer


@pytest.mark.parametrize("impl", ["dense", "banded"])
def test_longformer_layer_matches_hf_golden_without_torch(hf_golden, impl):
    """Our layer against HF's output recorded by peer_goldens (torch 2.13 / transformers 5), every
    position: real, padded (both zero) and the 3 global ones, batch 2 with 3 and 11 padding tokens.

    Tolerance 1e-5 abs: the outputs reach 1.9 and differ from HF's by 1.1e-6 at most (float32
    rounding of different summation orders), so 10x margin; each mistake below moves them by 0.03 to 2.6.
    """
    golden = hf_golden
    layer = _golden_layer(golden)
    x = jnp.asarray(golden["hidden_states"])
    hf_mask = golden["attention_mask"]  # HF's model convention: 0 padding, 1 local, 2 global
    key_mask = jnp.asarray(hf_mask > 0)
    global_tokens = tuple(int(t) for t in np.flatnonzero(hf_mask[0] == 2))
    assert global_tokens == tuple(golden["global_tokens"]) and (hf_mask == 2).sum() == 2 * len(global_tokens)
    assert (hf_mask == 0).sum() == 3 + 11  # padding is part of the case

    def error(key_mask=key_mask, global_tokens=global_tokens):
        return float(np.abs(np.asarray(layer(x, key_mask, global_tokens, impl)) - golden["output"]).max())

    np.testing.assert_allclose(np.asarray(layer(x, key_mask, global_tokens, impl)), golden["output"], atol=1e-5)
    # The comparison can fail: each of these mistakes moves the output far beyond the tolerance.
    assert error(key_mask=jnp.ones_like(key_mask)) > 1e-2  # padding ignored
    assert error(global_tokens=global_tokens[:2]) > 1e-2  # one global token forgotten
    layer.window = layer.window - 2  # one key fewer on each side
    assert error() > 1e-2
    layer.window = layer.window + 2
    weight = layer.key_global.weight
    weight.set_value(weight.get_value().at[0, 0].add(0.1))  # one global-key weight of 4,096 off by 0.1
    assert error() > 1e-3


def test_hf_golden_inputs_come_from_the_generator(hf_golden):
    """The committed file holds `peer_goldens.longformer_case()` (NumPy only), and the peer versions."""
    for key, value in peer_goldens.longformer_case().items():
        np.testing.assert_array_equal(hf_golden[key], value, err_msg=key)
    assert str(hf_golden["torch_version"]).startswith("2.") and str(hf_golden["transformers_version"]).startswith("5.")


def test_peer_goldens_without_torch_says_how_to_install(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed: the generator would run")
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[bench\]"'):
        peer_goldens.main(["--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_vil_shapes_banded_equals_dense_and_errors():
    config = ViLConfig(
        image_size=12, in_channels=1, num_classes=3, stages=(ViLStage(2, 8, 1, 2, 3), ViLStage(2, 8, 1, 2, 3))
    )
    model = ViL(config, rngs=nnx.Rngs(0))
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 12, 1)), jnp.float32)

    def forward(impl):
        model.impl = impl
        return nnx.jit(lambda m, x: m(x))(model, images)

    dense = forward("dense")
    assert dense.shape == (2, 3)
    np.testing.assert_allclose(forward("banded"), dense, atol=1e-5)
    with pytest.raises(ValueError, match="images must be"):
        model(images[:, :8])
    with pytest.raises(ValueError, match="must be odd"):
        ViLStage(2, 16, 1, 2, 4)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        ViLConfig(image_size=30)


def _unfolded_self_attention(weights, x, pattern, heads, key_mask):
    """Reference: every projection applied to every token, global rows through `global_qkv`."""
    batch, n, size = x.shape

    def project(name):
        w, b = weights[name]
        return (x @ w.T + b).reshape(batch, n, heads, size // heads)

    glob = (project("query_global"), project("key_global"), project("value_global"))
    out = hybrid_attention(
        project("query"), project("key"), project("value"), pattern, impl="dense", key_mask=key_mask, global_qkv=glob
    )
    return out.reshape(batch, n, size)


def test_folded_global_projections_equal_projecting_every_token():
    """The global rows with key/value_global folded into the query side: outputs and gradients."""
    rng = np.random.default_rng(3)
    size, heads, n = 24, 3, 21
    weights = {
        m: (
            jnp.asarray(rng.normal(size=(size, size)) / 5, jnp.float32),
            jnp.asarray(rng.normal(size=(size,)) / 5, jnp.float32),
        )
        for m in PROJECTIONS
    }
    x = jnp.asarray(rng.normal(size=(2, n, size)), jnp.float32)
    key_mask = jnp.asarray(rng.random((2, n)) > 0.2).at[1].set(False)  # example 1: every key padded
    pattern = AttentionPattern(window=(2, 3), global_tokens=(2, 7, 18))
    cot = jnp.asarray(rng.normal(size=(2, n, size)), jnp.float32)

    def loss(fn, impl=None):
        kw = {"impl": impl} if impl else {}
        return jax.jit(
            jax.value_and_grad(
                lambda w, x: jnp.sum(fn(w, x, pattern, heads, key_mask=key_mask, **kw) * cot), argnums=(0, 1)
            )
        )(weights, x)

    expected = loss(lambda w, x, p, h, key_mask: _unfolded_self_attention(w, x, p, h, key_mask))
    got = loss(longformer_self_attention, "banded")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
