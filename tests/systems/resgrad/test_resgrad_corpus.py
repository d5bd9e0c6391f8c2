"""ResGrad's corpus: built-in sentences, phonemizer, seeded atomic builds, and the loader's checks."""

import os
import shutil
import wave

import numpy as np
import pytest

from frugal.scripts.systems.resgrad import corpus, features, phonemize
from frugal.scripts.systems.resgrad.phonemize import Sentence, builtin_sentences
from frugal.scripts.systems.resgrad.voice import PiperVoice

needs_espeak = pytest.mark.skipif(not phonemize.espeak_available(), reason="the espeak extra is not installed")


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    old = os.environ.get("XDG_CACHE_HOME")
    home = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def three():
    """The three shortest built-in sentences, given splits train / valid / test."""
    short = sorted(builtin_sentences(), key=lambda s: len(s.phonemes))[:3]
    return [Sentence(s.id, split, s.text, s.phonemes) for s, split in zip(short, ("train", "valid", "test"))]


@pytest.fixture(scope="module")
def builds(tmp_path_factory, cache_home, three):
    root = tmp_path_factory.mktemp("corpora")
    return {
        "a": corpus.build_corpus(root / "a", sentences=three, seed=0, progress=False),
        "b": corpus.build_corpus(root / "b", sentences=three[::-1], seed=0, progress=False),
        "c": corpus.build_corpus(root / "c", sentences=three, seed=1, progress=False),
    }


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- sentences and phonemizer


def test_builtin_sentences_counts_and_header():
    sentences = builtin_sentences()
    counts = {split: sum(s.split == split for s in sentences) for split in phonemize.SPLITS}
    assert counts == {"train": 1400, "valid": 95, "test": 200}
    assert len({s.id for s in sentences}) == len(sentences)
    assert all(s.id.startswith("LJ") and s.phonemes and s.text for s in sentences)
    assert all(4 <= len(s.text.split()) <= 30 for s in sentences if s.split != "valid")
    header = [line for line in _tsv_lines() if line.startswith("#")]
    assert len(header) == 3 and "public domain" in header[0] and "espeak-ng" in header[2]


def _tsv_lines():
    import importlib.resources

    text = importlib.resources.files("frugal.scripts.systems.resgrad").joinpath("sentences.tsv").read_text("utf-8")
    return text.splitlines()


@needs_espeak
def test_worker_reproduces_the_tsv_phonemes():
    sentences = [s for s in builtin_sentences() if "," in s.text][:3]
    assert len(sentences) == 3
    assert phonemize.phonemize([s.text for s in sentences]) == [s.phonemes for s in sentences]


@needs_espeak
def test_worker_keeps_clause_punctuation():
    (got,) = phonemize.phonemize(["This: is, a, test."])
    assert got == "ðˈɪs: ɪz, ˈeɪ, tˈɛst."


@pytest.mark.parametrize(
    "texts, message",
    [
        (["fine text", ""], r"sentences\[1\] is empty"),
        (["   \t"], r"sentences\[0\] is empty"),
        (["ok", "fine", "!!! ???"], r"sentences\[2\] .* no letters or digits"),
        ("a string", "list of strings"),
    ],
)
def test_phonemize_rejects_bad_text(texts, message):
    with pytest.raises(ValueError, match=message):
        phonemize.phonemize(texts)


def test_missing_espeak_extra_says_how_to_install(monkeypatch):
    real = phonemize.importlib.util.find_spec
    monkeypatch.setattr(
        phonemize.importlib.util, "find_spec", lambda name, *a: None if name == "espeakng_loader" else real(name, *a)
    )
    with pytest.raises(RuntimeError, match=r"pip install 'frugal-jax\[espeak\]'"):
        phonemize.phonemize(["hello there"])


# ----------------------------------------------------------------------------- builds


def test_same_seed_is_byte_identical_whatever_the_order(builds):
    a, b = _files(builds["a"]), _files(builds["b"])
    assert sorted(a) == sorted(b)
    assert {"features.npz", "manifest.json", "metadata.csv", "phonemes.tsv"} <= set(a)
    assert sum(name.startswith("wavs/") for name in a) == 3
    assert a == b


def test_other_seed_differs(builds):
    a, c = _files(builds["a"]), _files(builds["c"])
    wavs = [n for n in a if n.startswith("wavs/")]
    assert all(a[n] != c[n] for n in wavs)
    assert a["features.npz"] != c["features.npz"]


def test_zero_noise_corpus_ignores_the_seed(tmp_path, cache_home, three):
    one = three[:1]
    x = corpus.build_corpus(tmp_path / "x", sentences=one, seed=0, noise_scale=0.0, noise_w=0.0, progress=False)
    y = corpus.build_corpus(tmp_path / "y", sentences=one, seed=7, noise_scale=0.0, noise_w=0.0, progress=False)
    fx, fy = _files(x), _files(y)
    fx.pop("manifest.json"), fy.pop("manifest.json")  # it records the seed
    assert fx == fy


def test_loaded_utterances_are_consistent(builds, three):
    loaded = corpus.load_corpus(builds["a"])
    assert {split: [u.id for u in us] for split, us in loaded.items()} == {s.split: [s.id] for s in three}
    texts = {s.id: s for s in three}
    for u in (u for us in loaded.values() for u in us):
        assert u.text == texts[u.id].text and u.phonemes == texts[u.id].phonemes
        assert u.phoneme_ids.dtype == np.int32 and u.durations.dtype == np.int32
        assert u.phoneme_ids.shape == u.durations.shape == (2 * len(u.phonemes) + 3,)
        with wave.open(str(builds["a"] / "wavs" / f"{u.id}.wav")) as f:
            assert f.getframerate() == 22050 and f.getsampwidth() == 2 and f.getnchannels() == 1
            n = f.getnframes()
        assert n % 256 == 0 and int(u.durations.sum()) == n // 256 == u.mel.shape[0]
        assert u.mel.shape == (n // 256, 80) and u.mel.dtype == np.float32
        assert u.f0.shape == u.energy.shape == (n // 256,) and (u.f0 > 0).any()
        audio = corpus.read_wav(builds["a"] / "wavs" / f"{u.id}.wav")
        np.testing.assert_array_equal(u.mel, features.log_mel(audio))
        np.testing.assert_array_equal(u.energy, features.energy(audio))
    manifest = (builds["a"] / "manifest.json").read_text()
    assert '"utterances": 3' in manifest and "public domain" in manifest and '"sample_rate": 22050' in manifest


def test_metadata_is_ljspeech_format(builds, three):
    lines = (builds["a"] / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert lines == [f"{s.id}|{s.text}|{s.text}" for s in sorted(three, key=lambda s: s.id)]


def test_a_failed_build_leaves_nothing(tmp_path, cache_home, three, monkeypatch):
    real = PiperVoice.synthesize
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("synthesis failed midway")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PiperVoice, "synthesize", flaky)
    with pytest.raises(RuntimeError, match="midway"):
        corpus.build_corpus(tmp_path / "out", sentences=three, seed=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_an_existing_folder_and_bad_sentences(tmp_path, three):
    (tmp_path / "there").mkdir()
    with pytest.raises(FileExistsError, match="there exists"):
        corpus.build_corpus(tmp_path / "there", sentences=three, seed=0)
    with pytest.raises(ValueError, match="repeat ids"):
        corpus.build_corpus(tmp_path / "dup", sentences=three[:1] * 2, seed=0)
    with pytest.raises(ValueError, match="split 'dev'"):
        corpus.build_corpus(tmp_path / "bad", sentences=[Sentence("x1", "dev", "a b", "ɐ")], seed=0)


def test_ensure_corpus_builds_once(cache_home, three, monkeypatch):
    first = corpus.ensure_corpus(three[:1], seed=5, progress=False)
    assert first.parent == cache_home / "frugal" / "resgrad" and (first / "manifest.json").is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("the cached corpus should be reused")

    monkeypatch.setattr(corpus, "build_corpus", no_build)
    assert corpus.ensure_corpus(three[:1], seed=5, progress=False) == first
    assert corpus.corpus_dir(three[:1], seed=6) != first
    assert corpus.corpus_dir(three[:2], seed=5) != first
    assert corpus.corpus_dir(three[:1], seed=5, noise_w=0.5) != first


def test_utterance_seed_depends_on_seed_and_id_only():
    assert corpus.utterance_seed(0, "LJ001-0001") == corpus.utterance_seed(0, "LJ001-0001")
    assert len({corpus.utterance_seed(s, i) for s in (0, 1) for i in ("a", "b")}) == 4


# ----------------------------------------------------------------------------- loader errors


@pytest.fixture
def user_copy(builds, tmp_path):
    """A user's LJSpeech-style folder: our corpus without features.npz and manifest.json."""
    folder = tmp_path / "mine"
    shutil.copytree(builds["a"], folder)
    (folder / "features.npz").unlink()
    (folder / "manifest.json").unlink()
    return folder


def test_a_user_folder_without_features_loads_the_same(builds, user_copy):
    ours, theirs = corpus.load_corpus(builds["a"]), corpus.load_corpus(user_copy)
    for split in ours:
        for u, v in zip(ours[split], theirs[split], strict=True):
            assert u.id == v.id
            np.testing.assert_array_equal(u.mel, v.mel)
            np.testing.assert_array_equal(u.f0, v.f0)
            np.testing.assert_array_equal(u.energy, v.energy)
            np.testing.assert_array_equal(u.durations, v.durations)


def test_missing_phonemes_tsv_explains_durations(user_copy):
    (user_copy / "phonemes.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"phonemes\.tsv is missing.*no aligner.*frame durations"):
        corpus.load_corpus(user_copy)


def test_missing_wav_names_id_and_line(user_copy):
    second = (user_copy / "metadata.csv").read_text(encoding="utf-8").splitlines()[1].split("|")[0]
    (user_copy / "wavs" / f"{second}.wav").unlink()
    with pytest.raises(FileNotFoundError, match=rf"line 2: no wav for id '{second}'"):
        corpus.load_corpus(user_copy)


def test_wrong_sample_rate_is_named(user_copy):
    first = (user_copy / "metadata.csv").read_text(encoding="utf-8").splitlines()[0].split("|")[0]
    path = user_copy / "wavs" / f"{first}.wav"
    with wave.open(str(path), "rb") as f:
        data = f.readframes(f.getnframes())
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(data)
    with pytest.raises(ValueError, match=rf"{first}\.wav: sample rate 16000 Hz; 22,050 Hz is required"):
        corpus.load_corpus(user_copy)


def test_durations_not_summing_name_the_id(user_copy):
    path = user_copy / "phonemes.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    cols = lines[1].split("\t")
    durations = cols[4].split()
    durations[0] = str(int(durations[0]) + 1)
    cols[4] = " ".join(durations)
    lines[1] = "\t".join(cols)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"durations of id '{cols[0]}' sum to \d+ frames but .* has \d+ frames"):
        corpus.load_corpus(user_copy)


def test_wrong_column_counts_name_the_line(user_copy):
    meta = user_copy / "metadata.csv"
    lines = meta.read_text(encoding="utf-8").splitlines()
    meta.write_text("\n".join([*lines[:2], lines[2] + "|extra|column"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metadata\.csv line 3: 5 '\|'-separated columns"):
        corpus.load_corpus(user_copy)
    meta.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tsv = user_copy / "phonemes.tsv"
    rows = tsv.read_text(encoding="utf-8").splitlines()
    tsv.write_text("\n".join([*rows[:3], rows[3].rsplit("\t", 1)[0]]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"phonemes\.tsv line 4: 4 tab-separated columns, 5 required"):
        corpus.load_corpus(user_copy)
