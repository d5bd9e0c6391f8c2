"""A reverse-dictionary retrieval set: WordNet 3.0 glosses as queries, Webster 1913 definitions as passages.

The query is a WordNet gloss (the definition part, before its first `; "` example) of a noun or verb
synset that has a monosemous lemma (the lemma has exactly one sense in that part of speech, per
`index.noun` / `index.verb`). Its one relevant passage is that headword's Webster 1913 senses, taken
from GCIDE (the GNU Collaborative International Dictionary of English: Webster 1913 plus additions) in
the same part of speech. A different dictionary wrote the passage, so a query matches it by meaning,
not by shared wording. Example: the query "an abnormal loss of strength" (asthenia) has as its passage
Webster's own one-line definition of asthenia (not quoted here: no GCIDE text is kept in this project).

Both sources are Debian main packages, read where Debian installs them (under `root`):
`wordnet-base` (WordNet 3.0, Princeton's permissive WordNet licence) and `dict-gcide` (dictd format:
`gcide.index` plus the gzip-readable `gcide.dict.dz`; GPL-2+). Because GCIDE is GPL-2+, the set is built
on the user's machine at run time and never shipped with this project.

Passage text: GCIDE marks each segment of an entry with its source. Segments tagged as WordNet copies
(`[WordNet 1.5]`, ...) are dropped, as they would leak the query into its passage; segments from Webster
1913 (`[1913 Webster]`, `[Webster 1913 Suppl.]`, with or without later corrections) are kept; other
additions are dropped. The entry's headline (pronunciation, part of speech, etymology), quotations and
their authors, bracketed labels ([Obs.]), synonym and usage notes and the run-on phrases at its end
({To abide by}) are removed; a headword without an entry of its own takes its definition as such a
run-on phrase ({Diving petrel} under Petrel). The headword and its simple inflections are masked with
`___`, and the passage is cut to `max_passage_words` words. A pair needs a non-empty passage that does
not contain its gloss word for word (about 1.5% do: WordNet glosses copied back into GCIDE under a
Webster tag, or short glosses both dictionaries share); the synset's first monosemous lemma with such a
passage is the headword.

Distractors: the Webster text of a seeded sample of other GCIDE headwords (no lemma of any query's
synset, no query's gloss of five or more words in their text, so that no unjudged passage is as relevant
as the judged one). The split is by synset with a seeded shuffle; queries that share a headword or a
passage stay on one side, so no headword is in both training and test.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from pathlib import Path

import numpy as np

from frugal.scripts.systems.lead.retrieval_set import RetrievalSet

PACKAGES = ("wordnet-base", "dict-gcide")
INSTALL_HINT = "sudo apt-get install wordnet-base dict-gcide"
LICENCES = {
    "wordnet-base": "WordNet 3.0 licence (Princeton University; permissive)",
    "dict-gcide": "GPL-2+ (GCIDE); this set is built locally at run time and never shipped",
}
MASK = "___"
POS_FILES = {"n": "noun", "v": "verb"}

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
# A source tag closes each segment of a GCIDE entry: [1913 Webster], [WordNet 1.5], [PJC], ...
_TAG = re.compile(r"\[([^\[\]\n]*(?:Webster|WordNet|PJC|Century Dict)[^\[\]\n]*)\]")
# GCIDE's ASCII spellings of accented letters: [a^], ['e], [=o], [imac], [aum], ...
_ACCENT = re.compile(r"\[(?:[=\-.'`\"~^,*]([A-Za-z]{1,2})|([A-Za-z]{1,2})(?:\^|mac|um))\]")
_LIGATURES = {"[ae]": "ae", "[AE]": "Ae", "[oe]": "oe", "[OE]": "Oe", "[eth]": "th", "[thorn]": "th", "[ng]": "ng"}
_POS = re.compile(r"(?:^|[\s,;(])(n|v|a|adv|prep|conj|interj|pron|imp|p\. ?p|p\. ?a|pl)\.")


def paths(root: str | Path = "/") -> dict[str, Path]:
    """Where Debian installs the files this set reads, under `root`."""
    base = Path(root) / "usr" / "share"
    found = {
        f"{kind}.{name}": base / "wordnet" / f"{kind}.{name}" for kind in ("data", "index") for name in ("noun", "verb")
    }
    found["gcide.index"] = base / "dictd" / "gcide.index"
    found["gcide.dict.dz"] = base / "dictd" / "gcide.dict.dz"
    return found


def available(root: str | Path = "/") -> bool:
    """True when both packages' files are installed under `root`."""
    return all(p.is_file() for p in paths(root).values())


def package_versions(root: str | Path = "/") -> dict[str, str]:
    """Installed Debian versions, from the first line of each package's changelog.Debian.gz ("unknown" if absent)."""
    versions = {}
    for package in PACKAGES:
        changelog = Path(root) / "usr" / "share" / "doc" / package / "changelog.Debian.gz"
        versions[package] = "unknown"
        if changelog.is_file():
            with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as f:
                match = re.match(r"\S+ \(([^)]+)\)", f.readline())
            if match:
                versions[package] = match.group(1)
    return versions


# ----------------------------------------------------------------------------------------------- WordNet


def wordnet_queries(root: str | Path = "/") -> list[dict]:
    """Noun and verb synsets with at least one monosemous lemma, in file order:
    {"pos", "offset", "lemmas" (the monosemous ones), "words" (all lemmas), "gloss"}; lemmas are lower case
    with spaces for underscores."""
    files = paths(root)
    found = []
    for pos, name in POS_FILES.items():
        monosemous = set()
        with open(files[f"index.{name}"], encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):
                    continue  # the licence header
                fields = line.split()
                if len(fields) > 2 and fields[2] == "1":
                    monosemous.add(fields[0])
        with open(files[f"data.{name}"], encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" ") or " | " not in line:
                    continue
                head, gloss = line.split(" | ", 1)
                fields = head.split()
                count = int(fields[3], 16)
                words = [fields[4 + 2 * i].lower() for i in range(count)]
                lemmas = [w.replace("_", " ") for w in dict.fromkeys(words) if w in monosemous]
                words = [w.replace("_", " ") for w in dict.fromkeys(words)]
                gloss = gloss.split('; "', 1)[0].strip().rstrip(";").strip()
                if lemmas and gloss:
                    found.append({"pos": pos, "offset": fields[0], "lemmas": lemmas, "words": words, "gloss": gloss})
    return found


# ------------------------------------------------------------------------------------------------- GCIDE


def _b64(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def read_gcide(root: str | Path = "/") -> tuple[dict[str, list[tuple[int, int]]], bytes]:
    """({lower-case headword: [(offset, length), ...] distinct, in index order}, the decompressed dictionary)."""
    files = paths(root)
    index: dict[str, list[tuple[int, int]]] = {}
    with open(files["gcide.index"], encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3 or fields[0].startswith("00-"):
                continue
            spans = index.setdefault(fields[0].lower(), [])
            span = (_b64(fields[1]), _b64(fields[2]))
            if span not in spans:
                spans.append(span)
    with gzip.open(files["gcide.dict.dz"]) as f:  # dictzip is gzip with an index in its header
        data = f.read()
    return index, data


def _header_length(lines: list[str]) -> int:
    """How many lines the entry's headline takes (headword, pronunciation, part of speech, etymology)."""
    depth, slashes, n = 0, 0, 0
    while n < len(lines):
        line = lines[n]
        depth += line.count("[") - line.count("]")
        slashes += line.count("\\")
        n += 1
        following = lines[n].strip() if n < len(lines) else ""
        continues = following[:1].islower() or following[:1] == "(" or "\\" in following  # another headword
        if depth <= 0 and slashes % 2 == 0 and not continues:
            break
    return n


def _plain(text: str) -> str:
    for code, letters in _LIGATURES.items():
        text = text.replace(code, letters)
    return _ACCENT.sub(lambda m: m.group(1) or m.group(2), text)


def _part_of_speech(headline: str) -> str:
    """ "n", "v", another abbreviation ("a", "adv", ...) or "" when the headline names none."""
    rest = re.sub(r"\([^()]*\)", " ", re.sub(r"\\[^\\]*\\", " ", _plain(headline)))  # no pronunciations
    rest = rest.split("[", 1)[0]  # nothing from the etymology on
    match = _POS.search(rest.split(",", 1)[1] if "," in rest else rest)
    return match.group(1) if match else ""


def _clean(text: str) -> str:
    """One definition paragraph as plain text: no sense number, quotation, author, label or markup."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^(?:\d+\.\s*)?(?:\([a-z]{1,2}\)\s*)?", "", text)  # sense numbers: "2.", "(a)"
    text = re.sub(r"\s\([a-z]\)(?=\s)", "", text)  # sub-sense letters inside the paragraph
    text = re.sub(r"^Note:\s*", "", text)
    text = re.sub(r"--\s*\{.*$", "", text)  # run-in derived words at the end: -- {Cheer"less*ly}, adv.
    text = re.sub(r'(?:"[^"]*"\s*)?--\s?[A-Z].*$', "", text)  # a quotation and its author, at the end
    text = _plain(text)
    while True:  # labels and leftovers in brackets: [Obs.], [Colloq.], [L. ...]
        stripped = re.sub(r"\[[^\[\]]*\]", "", text)
        if stripped == text:
            break
        text = stripped
    text = re.sub(r"\S+ ?\\[^\\]*\\,?", "", text)  # a further headword and its pronunciation
    text = re.sub(r"\([^()]*[*`][^()]*\)", "", text)  # a pronunciation in parentheses
    for mark in "{}[]":
        text = text.replace(mark, "")
    text = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s+", " ", text)).strip()
    return "" if re.fullmatch(r"[\W\d_]*", text) else text


def _phrase_names(paragraph: str) -> tuple[list[str], str]:
    """({Beach flea}, {Beach grass} ...) -> (["beach flea", ...] lower case, the rest of the paragraph)."""
    names = []
    rest = paragraph
    while True:
        match = re.match(r"\s*(?:,|\bor\b|\band\b)?\s*\{([^{}]+)\}", rest)
        if not match:
            break
        names.append(re.sub(r"\s+", " ", re.sub(r'["*`]', "", match.group(1))).strip().lower())
        rest = rest[match.end() :]
    rest = re.sub(r"^\s*(?:\([^()]*\)\s*)?[,.:]?\s*", "", rest)  # a field label "(Zool.)" and the comma
    return names, rest


@dataclasses.dataclass(frozen=True)
class Entry:
    """One GCIDE entry, reduced to its Webster 1913 text."""

    headline: str  # headword(s), pronunciation, part of speech, etymology, as in the file
    pos: str  # "n", "v", another abbreviation, or "" (compounds often name none)
    senses: tuple[str, ...]  # the cleaned Webster paragraphs of the entry's own headword(s)
    phrases: dict  # {lower-case run-on phrase ("diving petrel"): its cleaned Webster paragraphs}

    def defines(self, key: str) -> bool:
        """Whether `key` (lower case) is a headword of the headline ("Asthenia \\...\\, Astheny \\...\\")."""
        headline = self.headline.lower()
        return any(headline.startswith(key + gap) or f", {key}{gap}" in headline for gap in (" \\", "\\"))


def parse_entry(text: str) -> Entry:
    """Splits one entry into its headline, its own senses and its run-on phrases, keeping only segments
    whose source tag is Webster 1913 (see the module docstring)."""
    lines = text.split("\n")
    n = _header_length(lines)
    headline = " ".join(line.strip() for line in lines[:n])
    body = "\n".join(lines[n:])
    senses: list[str] = []
    phrases: dict[str, list[str]] = {}
    current: list[str] | None = senses  # where definition paragraphs go; None once past the run-on phrases
    phrase_indent = None  # indent of the open run-on phrase paragraph
    skip_deeper_than = None
    reference = None  # indent of the last definition paragraph: quotations sit deeper
    start = 0
    for tag in [*_TAG.finditer(body), None]:
        end = tag.start() if tag else len(body)
        source = tag.group(1) if tag else ""
        keep = "Webster" in source and "WordNet" not in source
        piece = body[start:end]
        if start > 0 and not piece.startswith("\n"):
            parts = re.split(r"\n[ \t]*\n", piece, maxsplit=1)  # text run on after a tag: derived words
            piece = parts[1] if len(parts) > 1 else ""
        for paragraph in re.split(r"\n[ \t]*\n", piece):
            if not paragraph.strip():
                continue
            first = paragraph.lstrip("\n")
            indent = len(first) - len(first.lstrip(" "))
            stripped = first.strip()
            if skip_deeper_than is not None and indent > skip_deeper_than:
                continue
            skip_deeper_than = None
            if stripped.startswith(("Syn:", "Usage:")):
                skip_deeper_than = indent
                continue
            if stripped.startswith("{") and (phrase_indent is not None or reference is None or indent <= reference):
                names, stripped = _phrase_names(stripped)
                current = []
                for name in names:
                    phrases.setdefault(name, current)
                phrase_indent = reference = indent
            elif phrase_indent is not None and indent <= phrase_indent:
                current, phrase_indent = None, None  # text after the phrases: not the headword's own senses
            elif reference is not None and indent >= reference + 5:
                continue  # an indented quotation
            else:
                reference = indent
            cleaned = _clean(stripped) if keep and current is not None else ""
            if cleaned:
                current.append(cleaned)
        start = tag.end() if tag else len(body)
    return Entry(headline, _part_of_speech(headline), tuple(senses), {k: tuple(v) for k, v in phrases.items() if v})


def mask_headword(text: str, headword: str) -> str:
    """`text` with the headword and its simple inflections (-s, -es, -ed, -ing, -ies, ...) replaced by ___."""
    words = headword.split()
    if words[-1][:-1].lower() not in text.lower():
        return text  # every form shares the last word's stem: nothing to mask
    stem = r"\s+".join(re.escape(w) for w in words[:-1])
    last = words[-1]
    forms = [re.escape(last) + r"(?:s|es|ed|d|ing|er|ers)?"]
    if last.endswith("y"):
        forms.append(re.escape(last[:-1]) + r"i(?:es|ed|er|ers)")
    if last.endswith("e"):
        forms.append(re.escape(last[:-1]) + r"(?:ing|ed)")
    if len(last) > 2 and last[-1] not in "aeiouwy":
        forms.append(re.escape(last + last[-1]) + r"(?:ing|ed|er|ers)")
    pattern = (stem + r"\s+" if stem else "") + "(?:" + "|".join(forms) + ")"
    return re.sub(rf"(?<![\w-]){pattern}(?![\w-])", MASK, text, flags=re.IGNORECASE)


class Gcide:
    """GCIDE's index and text, with each entry parsed once."""

    def __init__(self, root: str | Path = "/"):
        self.index, self.data = read_gcide(root)
        self._parsed: dict[int, Entry] = {}

    def entry(self, offset: int, length: int) -> Entry:
        if offset not in self._parsed:
            self._parsed[offset] = parse_entry(self.data[offset : offset + length].decode("utf-8", errors="replace"))
        return self._parsed[offset]

    def passage(self, headword: str, pos: str, max_words: int) -> tuple[str, list[int]]:
        """(the masked Webster 1913 senses of `headword` (lower case) in part of speech `pos`, cut to
        `max_words` words; the offsets of the entries whose own senses were used). `pos` is "n" (entries
        marked n. or unmarked), "v", or "other" (neither). Entries that define the headword come first;
        without them, its definitions as a run-on phrase inside another entry ({Diving petrel} in Petrel).
        Empty when GCIDE has no such Webster text."""
        accept = {"n": ("n", ""), "v": ("v",)}.get(pos)
        senses, used, from_phrases = [], [], []
        for offset, length in self.index.get(headword, ()):
            entry = self.entry(offset, length)
            if accept is None and entry.pos in ("n", "v", ""):
                continue
            if accept is not None and entry.pos not in accept:
                continue
            if entry.defines(headword):
                if entry.senses:
                    senses.extend(entry.senses)
                    used.append(offset)
            elif pos == "n" and headword in entry.phrases:
                from_phrases.extend(entry.phrases[headword])
        passage = " ".join(mask_headword(" ".join(senses or from_phrases), headword).split()[:max_words])
        return ("" if re.fullmatch(r"[\W_]*", passage.replace(MASK, "")) else passage), used


# ----------------------------------------------------------------------------------------------- the set


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def contains_verbatim(passage: str, gloss: str) -> bool:
    """Whether the gloss's words appear in the passage in order and adjacent (case and punctuation ignored).
    Such a passage is dropped from its pair: it either copies WordNet (a later addition tagged as Webster)
    or matches the query word for word, which is not a test of meaning."""
    return _words(gloss) in _words(passage)


class GlossFinder:
    """Finds any of many glosses (of at least `min_words` words) verbatim in a text, by their first words."""

    def __init__(self, glosses, min_words: int = 5):
        self.min_words = min_words
        self.by_start: dict[tuple[str, ...], list[list[str]]] = {}
        for gloss in glosses:
            words = _words(gloss).split()
            if len(words) >= min_words:
                self.by_start.setdefault(tuple(words[:min_words]), []).append(words)

    def found_in(self, text: str) -> list[str]:
        """The glosses (as lower-case words) found in `text`."""
        words, found = _words(text).split(), []
        for i in range(len(words) - self.min_words + 1):
            for gloss in self.by_start.get(tuple(words[i : i + self.min_words]), ()):
                if words[i : i + len(gloss)] == gloss:
                    found.append(" ".join(gloss))
        return found


def _missing_message(root) -> str:
    missing = [str(p) for p in paths(root).values() if not p.is_file()]
    return (
        f"the reverse-dictionary set needs WordNet 3.0 and GCIDE; missing under root {str(root)!r}: "
        f"{', '.join(missing)}. Install them with: {INSTALL_HINT} (GCIDE is GPL-2+: the set is built locally "
        "at run time and never shipped)"
    )


def reverse_dictionary_set(
    root: str | Path = "/",
    *,
    test_queries: int = 2000,
    distractors: int = 15000,
    max_passage_words: int = 64,
    seed: int = 0,
) -> RetrievalSet:
    """The set described in the module docstring, built from the packages installed under `root`."""
    if test_queries < 1 or distractors < 0 or max_passage_words < 1:
        raise ValueError(
            f"test_queries={test_queries} and max_passage_words={max_passage_words} must be >= 1 and "
            f"distractors={distractors} >= 0"
        )
    if not available(root):
        raise FileNotFoundError(_missing_message(root))
    gcide = Gcide(root)
    pairs = []  # (pos, synset offset, headword, gloss, passage)
    used_entries: set[int] = set()
    synset_words: set[str] = set()
    for synset in wordnet_queries(root):
        for lemma in synset["lemmas"]:  # the first monosemous lemma with Webster text
            passage, used = gcide.passage(lemma, synset["pos"], max_passage_words)
            if passage and not contains_verbatim(passage, synset["gloss"]):
                pairs.append((synset["pos"], synset["offset"], lemma, synset["gloss"], passage))
                used_entries.update(used)
                synset_words.update(synset["words"])
                break
    if len(pairs) <= test_queries:
        raise ValueError(f"test_queries={test_queries} leaves no training queries: only {len(pairs)} pairs were found")

    passages: list[str] = []  # one passage per distinct text
    passage_ids: list[str] = []
    where: dict[str, int] = {}
    positive = []
    for pos, _, headword, _, passage in pairs:
        if passage not in where:
            where[passage] = len(passages)
            passages.append(passage)
            passage_ids.append(f"gcide:{pos}:{headword}")
        positive.append(where[passage])
    test = _held_out(pairs, positive, test_queries, np.random.default_rng(seed))
    held_out = set(test)
    train = [i for i in range(len(pairs)) if i not in held_out]

    # Distractors: the Webster text of a seeded sample of headwords that are no word of a query's synset
    # and whose text holds no query verbatim (it would be a second, unjudged relevant passage).
    rng = np.random.default_rng([seed, 1])
    glosses = GlossFinder(pair[3] for pair in pairs)
    candidates = sorted(k for k in gcide.index if k not in synset_words)
    added = 0
    for k in rng.permutation(len(candidates)):
        for pos in ("n", "v", "other"):
            if added >= distractors:
                break
            passage, used = gcide.passage(candidates[k], pos, max_passage_words)
            fresh = used and passage not in where and not used_entries.intersection(used)
            if fresh and not glosses.found_in(passage):
                where[passage] = len(passages)
                passages.append(passage)
                passage_ids.append(f"gcide:{pos}:{candidates[k]}")
                used_entries.update(used)
                added += 1
        if added >= distractors:
            break

    counts = {
        "pairs": len(pairs),
        "noun_pairs": sum(p[0] == "n" for p in pairs),
        "verb_pairs": sum(p[0] == "v" for p in pairs),
        "train_queries": len(train),
        "test_queries": len(test),
        "query_passages": len(set(positive)),
        "distractors": added,
        "passages": len(passages),
    }
    return RetrievalSet(
        name="reverse-dictionary",
        passages=tuple(passages),
        passage_ids=tuple(passage_ids),
        train_queries=tuple(pairs[i][3] for i in train),
        train_positives=tuple(positive[i] for i in train),
        test_queries=tuple(pairs[i][3] for i in test),
        test_query_ids=tuple(f"wn:{pairs[i][0]}:{pairs[i][1]}" for i in test),
        test_relevant=tuple((positive[i],) for i in test),
        meta={
            "source": "WordNet 3.0 glosses -> GCIDE Webster 1913 senses",
            "versions": package_versions(root),
            "licences": dict(LICENCES),
            "counts": counts,
            "max_passage_words": max_passage_words,
            "seed": seed,
        },
    ).validate()


def _held_out(pairs: list, positive: list[int], count: int, rng: np.random.Generator) -> list[int]:
    """Indices of `count` held-out pairs, drawn by group: pairs that share a headword or a passage form
    one group, so no headword is on both sides of the split."""
    parent = list(range(len(pairs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict = {}
    for i, pair in enumerate(pairs):
        for key in (("headword", pair[2]), ("passage", positive[i])):
            parent[find(i)] = find(first.setdefault(key, i))
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    ordered = list(groups.values())
    test: list[int] = []
    for g in rng.permutation(len(ordered)):
        if len(test) + len(ordered[g]) <= count:
            test.extend(ordered[g])
        if len(test) == count:
            break
    return sorted(test)
