"""Child-process phonemizer: English text to the IPA phoneme strings Piper voices were trained on.

Run as `python -m frugal.scripts.systems.resgrad.espeak_worker`: reads a JSON list of sentences on
stdin, writes a JSON list of phoneme strings (same order) on stdout; with `--version` it writes
`{"espeak_ng": <version>, "voice": "en-us"}` instead. It loads espeak-ng
(GPL-3.0-or-later, from the optional `espeakng-loader` package) with ctypes, which is why it runs in
its own process: frugal's process never loads the library (`phonemize.phonemize` starts this).

What it reproduces (the behaviour of Piper's espeak phonemizer, github.com/rhasspy/piper-phonemize):
espeak-ng's `espeak_TextToPhonemes` in IPA mode (with stress marks) on voice "en-us", one clause per
call; the clause's terminator `, : ;` is kept as a phoneme followed by a space, `. ? !` as a phoneme
(ends a sentence); language-switch flags like `(fr)` are dropped; phonemes are NFD-decomposed.
Piper's training preprocessing flattens an utterance's sentences into one phoneme sequence (no
separator after the `.`), and so does this worker: one text in, one phoneme string out.
"""

from __future__ import annotations

import ctypes
import json
import sys
import unicodedata

VOICE = "en-us"
AUDIO_OUTPUT_SYNCHRONOUS = 0x02
ESPEAK_CHARS_AUTO = 0
PHONEMES_IPA = 0x02
CLAUSE_KEEP = {",": ", ", ":": ": ", ";": "; ", ".": ".", "?": "?", "!": "!"}


def load_espeak():
    """Loads libespeak-ng from espeakng_loader and initializes it with its bundled data (voice en-us)."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    if lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0) < 0:
        raise RuntimeError(f"espeak-ng failed to initialize with data at {espeakng_loader.get_data_path()}")
    if lib.espeak_SetVoiceByName(VOICE.encode()) != 0:
        raise RuntimeError(f"espeak-ng has no voice {VOICE!r}")
    return lib


def espeak_version(lib) -> str:
    return lib.espeak_Info(None).decode()


def drop_language_flags(phonemes: str) -> str:
    """Removes espeak's `(lang)` switch markers (they surround words read in another language)."""
    out, inside = [], False
    for ch in phonemes:
        if inside:
            inside = ch != ")"
        elif ch == "(":
            inside = True
        else:
            out.append(ch)
    return "".join(out)


def clause_terminator(data: bytes, stop: int) -> str:
    """The punctuation that ended the clause espeak just read, or "".

    espeak-ng leaves the text pointer one character past the clause's end (it reads one ahead;
    at the end of the text the pointer becomes NULL), so the terminator is the last non-space byte
    before `stop - 1`, the same rule Piper applies.
    """
    i = stop - 2
    while i > 0 and data[i : i + 1] in (b" ", b"\t", b"\r", b"\n", b"\x00"):
        i -= 1
    ch = chr(data[i]) if 0 <= i < len(data) and data[i] < 128 else ""
    return ch if ch in CLAUSE_KEEP else ""


def phonemize_text(lib, text: str) -> str:
    """One text to one phoneme string, clause by clause (see the module docstring)."""
    data = text.encode("utf-8")
    buf = ctypes.create_string_buffer(data)  # NUL-terminated, stays alive during the calls
    start = ctypes.addressof(buf)
    pointer = ctypes.c_void_p(start)
    parts: list[str] = []
    while pointer.value is not None:
        clause = lib.espeak_TextToPhonemes(ctypes.byref(pointer), ESPEAK_CHARS_AUTO, PHONEMES_IPA)
        stop = len(data) + 1 if pointer.value is None else pointer.value - start
        parts.append(unicodedata.normalize("NFD", drop_language_flags((clause or b"").decode("utf-8"))))
        parts.append(CLAUSE_KEEP.get(clause_terminator(data, stop), ""))
    return "".join(parts).strip()


def main() -> None:
    lib = load_espeak()
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(json.dumps({"espeak_ng": espeak_version(lib), "voice": VOICE}))
        return
    sentences = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise SystemExit("espeak_worker expects a JSON list of strings on stdin")
    sys.stdout.buffer.write(json.dumps([phonemize_text(lib, s) for s in sentences]).encode("utf-8"))


if __name__ == "__main__":
    main()
