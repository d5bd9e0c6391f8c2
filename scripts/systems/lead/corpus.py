"""A real retrieval set that needs no download: the documentation of installed Python packages.

Each public function or class with a docstring gives one query/passage pair: the query is the
docstring's summary (its first paragraph, as a user would describe what they look for) and the
relevant passage is the rest of the docstring (parameters, notes, examples), cut to `max_words`. The
object's own name is removed from its passage, so a query cannot be matched by the name alone. Pairs
whose summary is not unique (overloads, aliases, "See `foo`") are dropped: a query must have exactly
one relevant passage. Held-out queries are split by package, so no package's wording is seen in both
training and evaluation.

The set depends on the installed versions; `build_docstring_set` records them, and the order is
deterministic for a given environment (sorted by qualified name).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import pkgutil
import re
import warnings

from frugal.scripts.systems.lead.retrieval_set import RetrievalSet

# Packages of the default set: the scientific stack this project installs, and the standard library's
# larger documented packages.
DEFAULT_PACKAGES = (
    "numpy",
    "scipy",
    "sklearn",
    "jax",
    "email",
    "http",
    "logging",
    "json",
    "collections",
    "concurrent",
    "asyncio",
    "unittest",
    "xml",
    "urllib",
    "importlib",
)
_SKIP_PARTS = ("tests", "testing", "conftest", "setup", "__main__")


@dataclasses.dataclass(frozen=True)
class DocPair:
    """One query (the summary) and its relevant passage (the rest of the docstring)."""

    name: str  # qualified name of the documented object
    package: str  # top-level package
    query: str
    passage: str


def _module_names(package: str) -> list[str]:
    root = importlib.import_module(package)
    names = [package]
    if hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda name: None):
            parts = info.name.split(".")[1:]
            if any(p.startswith("_") or p in _SKIP_PARTS for p in parts):
                continue
            names.append(info.name)
    return sorted(names)


def _documented_objects(package: str) -> dict[str, str]:
    """{qualified name: docstring} of the public functions and classes defined in `package`."""
    found: dict[str, str] = {}
    for module_name in _module_names(package):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
        except Exception:  # a module that needs an optional dependency: not part of the set
            continue
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_"):
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj) or _is_ufunc(obj)):
                continue
            owner = getattr(obj, "__module__", None) or module_name
            if owner.split(".")[0] != package:
                continue  # re-exported from elsewhere
            qualified = f"{owner}.{getattr(obj, '__qualname__', attr)}"
            doc = inspect.getdoc(obj)
            if doc:
                found.setdefault(qualified, doc)
            if inspect.isclass(obj):  # the class's own public methods (inherited ones are documented at home)
                for method_name, method in sorted(vars(obj).items()):
                    if method_name.startswith("_") or not callable(method):
                        continue
                    method_doc = method.__doc__ if isinstance(method.__doc__, str) else None
                    if method_doc:
                        found.setdefault(f"{qualified}.{method_name}", inspect.cleandoc(method_doc))
    return found


def _is_ufunc(obj) -> bool:
    return type(obj).__name__ == "ufunc"


def split_docstring(doc: str) -> tuple[str, str]:
    """(summary, rest): the first paragraph, joined into one line, and everything after it."""
    paragraphs = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    summary = " ".join(paragraphs[0].split())
    rest = paragraphs[1].strip() if len(paragraphs) > 1 else ""
    return summary, rest


def _without_name(text: str, name: str) -> str:
    """The text without the object's own name (and without docstring-template fields like %(x)s)."""
    text = re.sub(r"%\(\w+\)s", "", text)
    short = name.rsplit(".", 1)[-1]
    return re.sub(rf"\b{re.escape(short)}\b", "", text) if len(short) > 2 else text


def docstring_pairs(
    packages=DEFAULT_PACKAGES, *, min_query_words: int = 4, min_passage_words: int = 20, max_words: int = 200
) -> list[DocPair]:
    """Query/passage pairs from the packages' docstrings (see the module docstring)."""
    if min_query_words < 1 or min_passage_words < 1 or max_words < min_passage_words:
        raise ValueError(
            f"min_query_words={min_query_words}, min_passage_words={min_passage_words} must be >= 1 and "
            f"max_words={max_words} >= min_passage_words"
        )
    candidates: list[DocPair] = []
    for package in packages:
        try:
            docs = _documented_objects(package)
        except ModuleNotFoundError:
            raise ValueError(f"package {package!r} is not installed; installed packages only") from None
        for name, doc in sorted(docs.items()):
            summary, rest = split_docstring(doc)
            rest = " ".join(_without_name(rest, name).split()[:max_words])
            if len(summary.split()) >= min_query_words and len(rest.split()) >= min_passage_words:
                candidates.append(DocPair(name, package, summary, rest))
    query_count: dict[str, int] = {}
    passage_count: dict[str, int] = {}
    for pair in candidates:
        query_count[pair.query.lower()] = query_count.get(pair.query.lower(), 0) + 1
        passage_count[pair.passage] = passage_count.get(pair.passage, 0) + 1
    return [p for p in candidates if query_count[p.query.lower()] == 1 and passage_count[p.passage] == 1]


def split_by_package(pairs: list[DocPair], held_out: tuple[str, ...]) -> tuple[list[DocPair], list[DocPair]]:
    """(training pairs, held-out pairs): the held-out packages' pairs are never trained on."""
    packages = {p.package for p in pairs}
    missing = set(held_out) - packages
    if missing:
        raise ValueError(f"held_out={held_out}: {sorted(missing)} have no pairs; packages present: {sorted(packages)}")
    train = [p for p in pairs if p.package not in held_out]
    test = [p for p in pairs if p.package in held_out]
    if not train:
        raise ValueError(f"held_out={held_out} leaves no training pairs")
    return train, test


def package_versions(packages=DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages (the standard library's are Python's)."""
    import sys

    versions = {}
    for package in packages:
        distribution = {"sklearn": "scikit-learn"}.get(package, package)
        try:
            versions[package] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = f"python {sys.version.split()[0]}"
    return versions


def split_at_random(pairs: list[DocPair], test_fraction: float, seed: int = 0) -> tuple[list[DocPair], list[DocPair]]:
    """(training pairs, held-out pairs): a seeded share of every package's pairs is held out."""
    import numpy as np

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    held = np.random.default_rng(seed).random(len(pairs)) < test_fraction
    train = [p for p, h in zip(pairs, held) if not h]
    test = [p for p, h in zip(pairs, held) if h]
    if not train or not test:
        raise ValueError(f"test_fraction={test_fraction} leaves no training or no held-out pairs of {len(pairs)}")
    return train, test


def docstring_set(
    packages=DEFAULT_PACKAGES,
    *,
    held_out: tuple[str, ...] = ("scipy",),
    split: str = "package",
    test_fraction: float = 0.25,
    seed: int = 0,
    max_words: int = 200,
) -> RetrievalSet:
    """The documentation retrieval set: every pair's passage is in the corpus; the held-out queries
    (one relevant passage each) are the `held_out` packages' summaries (`split="package"`: a domain
    the training never saw) or a seeded `test_fraction` of every package's (`split="random"`)."""
    pairs = docstring_pairs(packages, max_words=max_words)
    if split == "package":
        train, test = split_by_package(pairs, tuple(held_out))
        how = {"split": "package", "held_out": list(held_out)}
    elif split == "random":
        train, test = split_at_random(pairs, test_fraction, seed)
        how = {"split": "random", "test_fraction": test_fraction, "seed": seed}
    else:
        raise ValueError(f"split={split!r}: use 'package' or 'random'")
    order = {p.name: i for i, p in enumerate(pairs)}
    return RetrievalSet(
        name="docstrings",
        passages=tuple(p.passage for p in pairs),
        passage_ids=tuple(p.name for p in pairs),
        train_queries=tuple(p.query for p in train),
        train_positives=tuple(order[p.name] for p in train),
        test_queries=tuple(p.query for p in test),
        test_query_ids=tuple(p.name for p in test),
        test_relevant=tuple((order[p.name],) for p in test),
        meta={**how, "versions": package_versions(packages)},
    ).validate()
