"""English text to Piper phoneme strings, and ResGrad's built-in sentences with their phonemes.

`phonemize` runs `espeak_worker` in a child process (one per call, all sentences at once): espeak-ng
is GPL-3.0-or-later and comes with the optional extra `pip install 'frugal-jax[espeak]'`, so it is
never loaded into frugal's own process. The built-in corpus needs no espeak at all: its phonemes are
stored beside the text in `sentences.tsv` (LJSpeech 1.1 transcripts, public domain, as listed in
Grad-TTS's filelists, github.com/huawei-noah/Speech-Backbones).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import json
import subprocess
import sys

ESPEAK_HINT = "pip install 'frugal-jax[espeak]'"
WORKER = "frugal.scripts.systems.resgrad.espeak_worker"
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Sentence:
    id: str
    split: str
    text: str
    phonemes: str


def espeak_available() -> bool:
    """Whether the optional espeak extra (espeakng-loader) is installed; does not load it."""
    return importlib.util.find_spec("espeakng_loader") is not None


def _require_espeak() -> None:
    if not espeak_available():
        raise RuntimeError(
            f"phonemizing new text needs espeak-ng: {ESPEAK_HINT} (GPL-3.0-or-later; frugal runs it in a "
            "child process only). The built-in sentences need no espeak."
        )


def _run_worker(args: list[str], payload: str | None) -> str:
    _require_espeak()
    proc = subprocess.run(
        [sys.executable, "-m", WORKER, *args],
        input=None if payload is None else payload.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the espeak worker failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode("utf-8")


def phonemize(sentences: list[str]) -> list[str]:
    """IPA phoneme strings (Piper's espeak-ng en-us convention) for `sentences`, in order."""
    if isinstance(sentences, str):
        raise ValueError("sentences must be a list of strings, not one string")
    for i, text in enumerate(sentences):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"sentences[{i}] is empty; give text with words to phonemize")
        if not any(ch.isalnum() for ch in text):
            raise ValueError(f"sentences[{i}] ({text!r}) has no letters or digits the phonemizer can read")
    if not sentences:
        return []
    result = json.loads(_run_worker([], json.dumps(list(sentences))))
    for i, phonemes in enumerate(result):
        if not phonemes.strip():
            raise ValueError(f"sentences[{i}] ({sentences[i]!r}) gave no phonemes")
    return result


def espeak_version() -> dict:
    """`{"espeak_ng": version, "voice": "en-us"}` of the worker's espeak-ng."""
    return json.loads(_run_worker(["--version"], None))


def parse_sentences_tsv(text: str, *, source: str = "sentences.tsv") -> list[Sentence]:
    """Rows `id<TAB>split<TAB>text<TAB>phonemes`; `#` lines are comments."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise ValueError(f"{source} line {lineno}: expected 4 tab-separated columns, found {len(cols)}")
        if cols[1] not in SPLITS:
            raise ValueError(f"{source} line {lineno}: split {cols[1]!r} is not one of {SPLITS}")
        out.append(Sentence(*cols))
    return out


def builtin_sentences() -> list[Sentence]:
    """The packaged LJSpeech sentences (train / valid / test) with their phonemes."""
    resource = importlib.resources.files("frugal.scripts.systems.resgrad").joinpath("sentences.tsv")
    return parse_sentences_tsv(resource.read_text(encoding="utf-8"))
