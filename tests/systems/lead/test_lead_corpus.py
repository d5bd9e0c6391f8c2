"""The documentation retrieval set: one relevant passage per query, the object's name kept out of its
passage, a split by package with nothing shared, deterministic order, clear errors."""

import pytest

from frugal.scripts.systems.lead.corpus import (
    docstring_pairs,
    docstring_set,
    package_versions,
    split_at_random,
    split_by_package,
    split_docstring,
)

PACKAGES = ("json", "email", "logging", "http")


@pytest.fixture(scope="module")
def pairs():
    return docstring_pairs(PACKAGES)


def test_pairs_are_unique_real_documentation(pairs):
    import json

    assert len(pairs) > 40
    assert len({p.query.lower() for p in pairs}) == len(pairs)
    assert len({p.passage for p in pairs}) == len(pairs)
    for p in pairs:
        assert len(p.query.split()) >= 4 and 20 <= len(p.passage.split()) <= 200
        assert p.package in PACKAGES and p.name.split(".")[0] == p.package
    dumps = next(p for p in pairs if p.name == "json.dumps")
    summary, rest = split_docstring(json.dumps.__doc__)
    assert dumps.query == summary and dumps.passage.split()[:5] == rest.split()[:5]


def test_the_objects_name_is_not_in_its_passage(pairs):
    import re

    for p in pairs:
        short = p.name.rsplit(".", 1)[-1]
        if len(short) > 2:
            assert not re.search(rf"\b{re.escape(short)}\b", p.passage), p.name


def test_split_by_package_shares_nothing_and_order_is_deterministic(pairs):
    train, test = split_by_package(pairs, ("email",))
    assert {p.package for p in test} == {"email"} and "email" not in {p.package for p in train}
    assert len(train) + len(test) == len(pairs)
    assert docstring_pairs(PACKAGES) == pairs
    assert set(package_versions(PACKAGES)) == set(PACKAGES)


def test_split_docstring():
    assert split_docstring("Do a\n  thing well.\n\nMore text.\n\nEven more.") == (
        "Do a thing well.",
        "More text.\n\nEven more.",
    )
    assert split_docstring("Only a summary.") == ("Only a summary.", "")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: docstring_pairs(("no_such_package_here",)), "not installed"),
        (lambda p: docstring_pairs(("json",), max_words=5), "max_words=5"),
        (lambda p: split_by_package(p, ("numpy",)), "have no pairs"),
        (lambda p: split_by_package(p, PACKAGES), "no training pairs"),
        (lambda p: split_at_random(p, 1.0), "test_fraction=1.0"),
        (lambda p: docstring_set(("json",), split="by_name"), "split='by_name'"),
    ],
)
def test_bad_arguments(pairs, call, message):
    with pytest.raises(ValueError, match=message):
        call(pairs)


def test_random_split_holds_out_a_share_of_every_package(pairs):
    train, test = split_at_random(pairs, 0.25, seed=1)
    assert (train, test) == split_at_random(pairs, 0.25, seed=1)
    assert not {p.name for p in train} & {p.name for p in test} and len(train) + len(test) == len(pairs)
    assert 0.15 < len(test) / len(pairs) < 0.35
    rs = docstring_set(PACKAGES, split="random", test_fraction=0.25, seed=1).validate()
    assert rs.test_queries == tuple(p.query for p in test) and rs.meta["split"] == "random"
    for query, (relevant,) in zip(rs.test_queries, rs.test_relevant):
        assert next(p for p in test if p.query == query).passage == rs.passages[relevant]
