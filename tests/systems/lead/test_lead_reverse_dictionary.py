"""The reverse-dictionary set (WordNet glosses -> Webster 1913 senses from GCIDE) on hand-written miniature
files in the real Debian formats: Webster text kept, WordNet copies dropped, polysemous lemmas skipped,
the headword masked, exact queries and passages, distractors, a split that keeps a headword on one side,
and the install hint when the packages are absent. The text below is invented for these tests; no
GCIDE text is kept in this project (GCIDE is GPL-2+). One test builds the real set when the packages'
files were unpacked to /tmp/debroot (`apt-get download wordnet-base dict-gcide && dpkg -x <deb> /tmp/debroot`)."""

import gzip
import time
from pathlib import Path

import pytest

from frugal.scripts.systems.lead.reverse_dictionary import (
    INSTALL_HINT,
    MASK,
    GlossFinder,
    available,
    contains_verbatim,
    mask_headword,
    reverse_dictionary_set,
)

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
LICENCE_HEADER = "  1 Miniature WordNet-format files written by hand for frugal's tests.\n  2 \n"

# (lemmas with their sense counts in index.<pos>, gloss with its example) per synset; all invented.
NOUNS = [
    ([("glimmerstone", 1), ("nightstone", 1)], 'a pale stone that shines faintly in the dark; "they lined the path"'),
    ([("brindle", 2)], "a streaky tawny colour"),
    ([("brindle", 2)], 'an animal with a streaked coat; "the brindle ran off"'),
    ([("marsh_piper", 1)], "small wading bird that whistles at dusk"),
    ([("quillwort", 1)], "any of several aquatic plants with hollow leaves"),
    ([("copycat", 1)], 'one who imitates another; "do not be a copycat"'),
    ([("zarf", 1)], "a holder for a hot cup"),
    ([("fettle", 1)], 'a state of fitness; "in fine fettle"'),
]
VERBS = [([("fettle", 1)], 'put in good order; "she fettled the hearth"')]

ENTRIES = [  # (index keys, entry text in dictd's GCIDE layout)
    (
        ["Glimmerstone", "Glimmerstone lamp"],
        'Glimmerstone \\Glim"mer*stone`\\, n. [AS. glimor glow + stan\n'
        "   stone.] (Min.)\n"
        "   1. A soft gray stone giving a dim light at night;\n"
        "      glimmerstones were set along old roads. [Obs.] --Chaucer.\n"
        "      [1913 Webster]\n\n"
        "            The glimmerstone shone upon the hill.\n"
        "                                                  --Anon.\n"
        "      [1913 Webster]\n\n"
        "   2. Hence, any faint lamp.\n"
        "      [1913 Webster]\n\n"
        "   Syn: Glowstone; lamp.\n"
        "        [1913 Webster]\n\n"
        "   {Glimmerstone lamp}, a lamp of glimmerstone.\n"
        "      [1913 Webster]\n",
    ),
    (
        ["glimmerstone"],
        "glimmerstone \\glimmerstone\\ n.\n   1. a pale stone that shines faintly in the dark.\n      [WordNet 1.5]\n",
    ),
    (["Nightstone"], 'Nightstone \\Night"stone`\\, n.\n   A stone seen by night.\n   [1913 Webster]\n'),
    (["Brindle"], 'Brindle \\Brin"dle\\, n.\n   A streaked coloring on a dull ground.\n   [1913 Webster]\n'),
    (
        ["Piper", "Marsh piper", "Piper's fee"],
        'Piper \\Pip"er\\, n.\n'
        "   One who plays on a pipe.\n"
        "   [1913 Webster]\n\n"
        "   {Marsh piper} (Zool.), a small bird of the fens that calls\n"
        "      at nightfall.\n\n"
        "   {Piper's fee}, the fee of a piper.\n"
        "      [1913 Webster]\n",
    ),
    (
        ["Quillwort"],
        'Quillwort \\Quill"wort`\\, n. (Bot.)\n'
        "   1. A water plant with quill-like leaves; quillworts grow in\n"
        "      cold lakes.\n"
        "      [1913 Webster]\n\n"
        "   2. any of several aquatic plants with hollow leaves.\n"
        "      [WordNet 1.5]\n",
    ),
    (["Copycat"], 'Copycat \\Cop"y*cat`\\, n.\n   One who imitates another; a mimic.\n   [1913 Webster]\n'),
    (["Zarf"], "Zarf \\Zarf\\, n.\n   A holder for a hot cup.\n   [PJC]\n"),
    (
        ["Fettle"],
        'Fettle \\Fet"tle\\, v. t. [imp. & p. p. {Fettled}; p. pr. & vb.\n'
        "   n. {Fettling}.] [Prov. E.]\n"
        "   To make ready; to set in trim; the hearth was fettled before\n"
        "   dawn.\n"
        "   [1913 Webster]\n",
    ),
    (["Fettle"], 'Fettle \\Fet"tle\\, n.\n   Good condition; trim; as, in fine fettle.\n   [1913 Webster]\n'),
    (
        ["Zephyrine"],
        'Zephyrine \\Zeph"yr*ine\\, a.\n   Of or like the west wind; as, zephyrine airs.\n   [1913 Webster]\n',
    ),
    (
        ["Glowworm"],
        'Glowworm \\Glow"worm`\\, n.\n   An insect whose light is a pale stone that shines faintly in the dark.\n'
        "   [1913 Webster]\n",
    ),
]

PAIRS = {  # query -> passage, as the set must hold them
    "a pale stone that shines faintly in the dark": (
        f"A soft gray stone giving a dim light at night; {MASK} were set along old roads. Hence, any faint lamp."
    ),
    "small wading bird that whistles at dusk": "a small bird of the fens that calls at nightfall.",
    "any of several aquatic plants with hollow leaves": (
        f"A water plant with quill-like leaves; {MASK} grow in cold lakes."
    ),
    "a state of fitness": f"Good condition; trim; as, in fine {MASK}.",
    "put in good order": f"To make ready; to set in trim; the hearth was {MASK} before dawn.",
}
DISTRACTORS = {
    "gcide:n:brindle": "A streaked coloring on a dull ground.",
    "gcide:n:piper": "One who plays on a pipe.",
    "gcide:n:copycat": "One who imitates another; a mimic.",
    "gcide:other:zephyrine": f"Of or like the west wind; as, {MASK} airs.",
}


def _b64(value: int) -> str:
    text = ""
    while True:
        text = B64[value % 64] + text
        value //= 64
        if not value:
            return text


def _write_wordnet(folder: Path, name: str, synsets) -> None:
    data, offsets = LICENCE_HEADER, {}
    for lemmas, gloss in synsets:
        words = " ".join(f"{lemma} 0" for lemma, _ in lemmas)
        offset = len(data.encode())
        data += f"{offset:08d} 03 {name[0]} {len(lemmas):02x} {words} 000 | {gloss}  \n"
        for lemma, senses in lemmas:
            offsets.setdefault(lemma, (senses, []))[1].append(offset)
    index = LICENCE_HEADER + "".join(
        f"{lemma} {name[0]} {senses} 0 {senses} 0 {' '.join(f'{o:08d}' for o in found)}  \n"
        for lemma, (senses, found) in sorted(offsets.items())
    )
    (folder / f"data.{name}").write_text(data)
    (folder / f"index.{name}").write_text(index)


def write_packages(root: Path) -> Path:
    """Miniature wordnet-base and dict-gcide files under `root`, laid out as Debian installs them."""
    wordnet, dictd = root / "usr/share/wordnet", root / "usr/share/dictd"
    wordnet.mkdir(parents=True)
    dictd.mkdir(parents=True)
    _write_wordnet(wordnet, "noun", NOUNS)
    _write_wordnet(wordnet, "verb", VERBS)
    text, lines = b"", ["00-database-short\tA\tB\n"]
    for keys, entry in ENTRIES:
        body = (entry + "\n").encode()
        lines += [f"{key}\t{_b64(len(text))}\t{_b64(len(body))}\n" for key in keys]
        text += body
    (dictd / "gcide.index").write_text("".join(sorted(lines, key=str.lower)))
    (dictd / "gcide.dict.dz").write_bytes(gzip.compress(text))
    doc = root / "usr/share/doc/wordnet-base"
    doc.mkdir(parents=True)
    (doc / "changelog.Debian.gz").write_bytes(gzip.compress(b"wordnet (1:3.0-99) unstable; urgency=low\n\n  * test\n"))
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_packages(tmp_path_factory.mktemp("debroot"))


def _pairs(s):
    train = {q: s.passages[p] for q, p in zip(s.train_queries, s.train_positives)}
    test = {q: s.passages[r[0]] for q, r in zip(s.test_queries, s.test_relevant)}
    return train, test


def test_queries_and_passages_are_exact(root):
    s = reverse_dictionary_set(root, test_queries=1)
    train, test = _pairs(s)
    assert len(test) == 1 and len(train) == 4
    # Kept: Webster senses without headline, quotation, author, label, synonyms or run-on phrases; the
    # headword and its inflections masked; a run-on phrase as a passage when the headword has no entry.
    # Dropped: the [WordNet 1.5] sense and entry, the polysemous brindle, the copycat passage that holds its
    # gloss word for word, zarf (only a [PJC] text), the noun entry for the verb query.
    assert {**train, **test} == PAIRS
    assert s.meta["counts"] == {
        "pairs": 5,
        "noun_pairs": 4,
        "verb_pairs": 1,
        "train_queries": 4,
        "test_queries": 1,
        "query_passages": 5,
        "distractors": 4,
        "passages": 9,
    }
    # Distractors: other headwords' Webster text; never a lemma of a query's synset (nightstone, fettle)
    # nor a text holding a query verbatim (glowworm).
    assert {i: p for i, p in zip(s.passage_ids, s.passages) if p not in PAIRS.values()} == DISTRACTORS
    assert s.meta["versions"] == {"wordnet-base": "1:3.0-99", "dict-gcide": "unknown"}
    assert "GPL-2+" in s.meta["licences"]["dict-gcide"]


def test_split_is_seeded_and_keeps_a_headword_on_one_side(root):
    fettle = {"a state of fitness", "put in good order"}  # the noun and the verb share the headword
    sides = set()
    for seed in range(8):
        s = reverse_dictionary_set(root, test_queries=2, seed=seed)
        test = set(s.test_queries)
        assert len(test) == 2 and not test & set(s.train_queries)
        assert fettle <= test or not fettle & test
        sides.add(frozenset(test))
        assert s.test_query_ids == reverse_dictionary_set(root, test_queries=2, seed=seed).test_query_ids
    assert len(sides) > 1  # the seed matters


def test_distractor_count_and_passage_cut(root):
    s = reverse_dictionary_set(root, test_queries=1, distractors=2, max_passage_words=4)
    assert s.meta["counts"]["distractors"] == 2 and len(s.passages) == 7
    assert all(len(p.split()) <= 4 for p in s.passages)
    assert "To make ready; to" in s.passages


def test_masking_and_verbatim_checks():
    assert mask_headword("Berries and a berry; berried.", "berry") == f"{MASK} and a {MASK}; {MASK}."
    assert mask_headword("Running runs; a runner ran; rune.", "run") == f"{MASK} {MASK}; a {MASK} ran; rune."
    assert mask_headword("Diving  petrels dive; a petrel.", "diving petrel") == f"{MASK} dive; a petrel."
    assert contains_verbatim("A Small, Valve!", "a small valve")
    assert not contains_verbatim("A small valvelet.", "a small valve")
    finder = GlossFinder(["one two three four five six", "one two three four"])
    assert finder.found_in("zero One two three four, five six seven") == ["one two three four five six"]
    assert finder.found_in("one two three four") == []  # shorter glosses are not looked for


def test_absent_packages_say_how_to_install(tmp_path):
    assert not available(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        reverse_dictionary_set(tmp_path)
    message = str(error.value)
    assert INSTALL_HINT == "sudo apt-get install wordnet-base dict-gcide" and INSTALL_HINT in message
    assert "GPL-2+" in message and "never shipped" in message and "gcide.index" in message


def test_bad_arguments_are_refused(root):
    with pytest.raises(ValueError, match="test_queries"):
        reverse_dictionary_set(root, test_queries=0)
    with pytest.raises(ValueError, match="leaves no training queries"):
        reverse_dictionary_set(root, test_queries=5)


REAL_ROOT = Path("/tmp/debroot")


@pytest.mark.slow
@pytest.mark.skipif(not available(REAL_ROOT), reason="wordnet-base and dict-gcide are not unpacked in /tmp/debroot")
def test_the_real_set():
    start = time.perf_counter()
    s = reverse_dictionary_set(REAL_ROOT)
    seconds = time.perf_counter() - start
    counts = s.meta["counts"]
    assert 15_000 <= counts["pairs"] <= 20_000 and counts["noun_pairs"] > counts["verb_pairs"] > 1_000
    assert len(s.test_queries) == 2000 and counts["distractors"] == 15000
    assert seconds < 60
    pairs = list(zip(s.train_queries, s.train_positives)) + [(q, r[0]) for q, r in zip(s.test_queries, s.test_relevant)]
    assert not [q for q, p in pairs if contains_verbatim(s.passages[p], q)]  # no passage holds its own gloss
    queries = [q for q, _ in pairs]
    long_glosses = GlossFinder(queries, min_words=8)
    assert not [p for p in s.passages if long_glosses.found_in(p)]  # nor any long gloss
    judged = set(s.train_positives) | {r[0] for r in s.test_relevant}
    glosses = GlossFinder(queries)
    assert not [p for i, p in enumerate(s.passages) if i not in judged and glosses.found_in(p)]
    headword = lambda i: s.passage_ids[i].split(":", 2)[2]
    assert not {headword(p) for p in s.train_positives} & {headword(r[0]) for r in s.test_relevant}
    assert all(len(p.split()) <= 64 for p in s.passages)
    asthenia = queries.index("an abnormal loss of strength")
    assert s.passage_ids[pairs[asthenia][1]] == "gcide:n:asthenia"
    assert s.meta["versions"]["dict-gcide"] != "unknown"
