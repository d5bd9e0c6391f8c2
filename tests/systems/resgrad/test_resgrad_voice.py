"""ResGrad's Piper voice runner: phoneme ids, exact durations, seeded noise, the patched-model cache."""

import json
import os

import numpy as np
import onnxruntime
import pytest

from frugal.scripts.systems.resgrad import voice as voice_mod
from frugal.scripts.systems.resgrad.phonemize import builtin_sentences
from frugal.scripts.systems.resgrad.voice import PiperVoice, default_voice_path


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """The user cache (patched model) goes to a temporary folder for this module."""
    old = os.environ.get("XDG_CACHE_HOME")
    home = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def voice(cache_home):
    return PiperVoice.load()


@pytest.fixture(scope="module")
def short_ids(voice):
    shortest = min(builtin_sentences(), key=lambda s: len(s.phonemes))
    return voice.phoneme_ids(shortest.phonemes)


def test_phoneme_ids_follow_the_voice_map():
    config = json.loads(default_voice_path().with_name("en_US-joe-medium.onnx.json").read_text(encoding="utf-8"))
    table = config["phoneme_id_map"]
    assert PiperVoice.phoneme_map() == table
    for sentence in builtin_sentences()[:5]:
        expected = [table["^"][0], table["_"][0]]
        for symbol in sentence.phonemes:
            expected.append(table[symbol][0])
            expected.append(0)
        expected.append(table["$"][0])
        got = voice_mod.phonemes_to_ids(sentence.phonemes, PiperVoice.phoneme_map())
        assert got.dtype == np.int64
        assert got.tolist() == expected
    assert table["_"] == [0] and table["^"] == [1] and table["$"] == [2]


def test_every_builtin_phoneme_is_in_the_map():
    table = json.loads(default_voice_path().with_name("en_US-joe-medium.onnx.json").read_text(encoding="utf-8"))
    missing = {ch for s in builtin_sentences() for ch in s.phonemes if ch not in table["phoneme_id_map"]}
    assert missing == set()


def test_unknown_symbol_names_symbol_and_position(voice):
    with pytest.raises(ValueError, match=r"'Q' \(U\+0051\) at position 2"):
        voice.phoneme_ids("ab" + "Q")


def test_durations_are_hops_and_sum_to_the_audio(voice, short_ids):
    audio, samples = voice.synthesize(short_ids, seed=3)
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.abs(audio).max() <= 1.0
    assert samples.shape == short_ids.shape
    assert (samples % 256 == 0).all() and (samples > 0).any()
    assert int(samples.sum()) == audio.shape[0]


def test_same_seed_same_bytes_other_seed_differs(voice, short_ids):
    a, na = voice.synthesize(short_ids, seed=11)
    b, nb = voice.synthesize(short_ids, seed=11)
    c, nc = voice.synthesize(short_ids, seed=12)
    assert a.tobytes() == b.tobytes() and np.array_equal(na, nb)
    assert a.shape != c.shape or a.tobytes() != c.tobytes()


def test_zero_noise_ignores_the_seed_and_matches_the_unpatched_voice(voice, short_ids):
    a, na = voice.synthesize(short_ids, seed=1, noise_scale=0.0, noise_w=0.0)
    b, nb = voice.synthesize(short_ids, seed=2, noise_scale=0.0, noise_w=0.0)
    assert a.tobytes() == b.tobytes() and np.array_equal(na, nb)
    original = onnxruntime.InferenceSession(str(default_voice_path()), providers=["CPUExecutionProvider"])
    feeds = {
        "input": short_ids[None],
        "input_lengths": np.array([short_ids.size], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    }
    reference = original.run(None, feeds)[0].reshape(-1)
    np.testing.assert_allclose(a, np.clip(reference, -1, 1), atol=1e-6)


def test_length_scale_slows_speech(voice, short_ids):
    a, _ = voice.synthesize(short_ids, seed=0, noise_scale=0.0, noise_w=0.0)
    b, _ = voice.synthesize(short_ids, seed=0, noise_scale=0.0, noise_w=0.0, length_scale=1.5)
    assert b.size > 1.3 * a.size


def test_patched_model_is_cached_by_hash(voice, cache_home):
    path, durations = voice_mod.patched_model_paths(default_voice_path())
    assert path.parent == durations.parent == cache_home / "frugal" / "resgrad"
    assert voice_mod.file_sha256(default_voice_path())[:16] in path.name
    assert not list(path.parent.glob("*.partial"))
    before = path.stat().st_mtime_ns
    assert voice_mod.patched_model_paths(default_voice_path()) == (path, durations)
    assert path.stat().st_mtime_ns == before
    names = {o.name for o in onnxruntime.InferenceSession(str(path)).get_outputs()}
    assert {"output", "durations"} <= names
    small = onnxruntime.InferenceSession(str(durations))
    assert [o.name for o in small.get_outputs()] == ["durations", "noise_z_shape"]
    assert "noise_z" not in {i.name for i in small.get_inputs()}


def test_a_voice_needs_its_json(tmp_path):
    lonely = tmp_path / "voice.onnx"
    lonely.write_bytes(b"not read: the json is checked first")
    with pytest.raises(FileNotFoundError, match=r"voice\.onnx\.json is missing"):
        PiperVoice.load(lonely)
    with pytest.raises(FileNotFoundError, match=r"voice\.onnx\.json is missing"):
        PiperVoice.phoneme_map(lonely)
    with pytest.raises(FileNotFoundError, match="no Piper voice"):
        PiperVoice.load(tmp_path / "absent.onnx")


def test_patch_refuses_a_graph_that_is_not_vits():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ValueError, match="not a Piper VITS graph"):
        voice_mod.patch_model(helper.make_model(graph))
