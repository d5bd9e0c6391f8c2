"""Settings of `frugal lead data | distill | eval` (flags derived from these fields by
`frugal.scripts.configs`).

`quick` is the tests' size (seconds; numbers meaningless), `tour` the `frugal tour` section (the
standard library's documentation, one seed, a small student), `full` the command's default: the
documentation of numpy, scipy, scikit-learn, jax and the standard library, a random quarter of every
package's queries held out, three seeds per method (the table in this folder's README).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from frugal.scripts.configs import check_presets, knob
from frugal.scripts.data import user_cache_dir
from frugal.scripts.systems.lead.corpus import DEFAULT_PACKAGES
from frugal.scripts.systems.lead.training import METHODS

DATASETS = ("docstrings", "reverse_dictionary", "user")
STUDENTS = {
    "bpe": "3-layer encoder, random init, its own byte-level BPE tokenizer (shares nothing with the teacher)",
    "minilm3": "MiniLM's layers 0, 2, 4 and its tokenizer (sentence-transformers' layer reduction)",
}


@dataclasses.dataclass(frozen=True)
class LeadConfig:
    """One LEAD comparison: a retrieval set, the MiniLM teacher, a student, the distillation methods."""

    dataset: Literal["docstrings", "reverse_dictionary", "user"] = knob(
        "docstrings",
        "docstrings: installed packages' documentation (built in); reverse_dictionary: WordNet glosses -> "
        "Webster 1913 (Debian wordnet-base + dict-gcide); user: your MS MARCO / BEIR files",
        choices=DATASETS,
    )
    packages: tuple[str, ...] = knob(DEFAULT_PACKAGES, "docstrings: packages whose documentation makes the set")
    split: Literal["package", "random"] = knob(
        "random",
        "docstrings: hold out whole packages (--held-out; a domain never trained on) or a random share of every "
        "package's queries (--test-fraction)",
        choices=("package", "random"),
    )
    held_out: tuple[str, ...] = knob(("scipy",), "docstrings, split package: packages whose queries are held out")
    test_fraction: float = knob(0.25, "docstrings, split random: share of the queries held out (seeded)")
    dictionary_root: str = knob("/", "reverse_dictionary: root under which usr/share/wordnet and usr/share/dictd lie")
    beir_folder: str | None = knob(None, "user: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    corpus: str | None = knob(None, "user: corpus file (BEIR corpus.jsonl or MS MARCO collection.tsv)")
    queries: str | None = knob(None, "user: queries file (BEIR queries.jsonl or MS MARCO queries.tsv)")
    test_qrels: str | None = knob(None, "user: relevance judgements of the evaluation queries")
    train_qrels: str | None = knob(None, "user: relevance judgements of the training queries")
    max_train_queries: int | None = knob(None, "use at most this many training queries (seeded sample)")
    max_test_queries: int | None = knob(None, "evaluate on at most this many held-out queries (seeded sample)")
    negative_depth: int = knob(30, "mined hard-negative candidates per training query (BM25 and teacher, merged)")
    hard_negatives: int = knob(3, "hard negatives per query in a batch (plus every other query's group)")
    teacher_max_length: int = knob(128, "teacher tokens per passage")
    teacher: Literal["heads", "frozen"] = knob(
        "heads",
        "heads: frozen MiniLM + one linear head per layer trained on the training queries; frozen: MiniLM as is",
        choices=("heads", "frozen"),
    )
    head_steps: int = knob(300, "training steps of the teacher's per-layer heads")
    student: Literal["bpe", "minilm3"] = knob(
        "bpe", "the student: " + "; ".join(f"{k}: {v}" for k, v in STUDENTS.items()), choices=tuple(STUDENTS)
    )
    vocab_size: int = knob(8192, "bpe student: tokenizer vocabulary")
    width: int = knob(256, "bpe student: hidden width (4 heads, feed-forward 4x)")
    layers: int = knob(3, "bpe student: layers")
    query_max_length: int = knob(32, "student tokens per query")
    passage_max_length: int = knob(64, "student tokens per passage")
    methods: tuple[str, ...] = knob(("none", "response", "lead"), "methods compared", choices=tuple(METHODS))
    seeds: tuple[int, ...] = knob((0, 1, 2), "seeds; each re-draws the student's init, batches and layer draws")
    steps: int = knob(400, "student training steps")
    batch_queries: int = knob(16, "queries per batch")
    lr: float | None = knob(
        None, "peak learning rate (none: 5e-4 for bpe, 1e-4 for minilm3); warm-up over the first tenth, then cosine"
    )
    scale: float = knob(20.0, "score = scale x cosine, for teacher and student alike")
    temperature: float = knob(1.0, "divides the teacher's scores in every KL (the reference's 1)")
    layer_temperature: float = knob(10.0, "LEAD re-weighting temperature over -NLL of teacher layers (reference 10)")
    num_pairs: int = knob(3, "LEAD: layer pairs per step (the reference samples 5 of 6 student layers)")
    resample_every: int = knob(10, "LEAD: steps between layer re-draws (reference 10)")
    outdir: str | None = knob("reports/lead", "where students, metrics and the report go (none: nowhere)")
    cache_dir: str = knob(str(user_cache_dir() / "lead"), "cache of sets, teacher embeddings and tokenizers")
    progress: bool = knob(True, "progress lines and bars")

    def __post_init__(self):
        positive = (
            "negative_depth",
            "hard_negatives",
            "teacher_max_length",
            "vocab_size",
            "width",
            "layers",
            "query_max_length",
            "passage_max_length",
            "steps",
            "batch_queries",
            "resample_every",
            "num_pairs",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.head_steps < 0:
            raise ValueError(f"head_steps={self.head_steps} must be >= 0")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction} must be in (0, 1)")
        if self.hard_negatives > self.negative_depth:
            raise ValueError(f"hard_negatives={self.hard_negatives} must be <= negative_depth={self.negative_depth}")
        if self.width % 4:
            raise ValueError(f"width={self.width} must be a multiple of 4 (4 attention heads)")
        if not self.methods or not self.seeds:
            raise ValueError("methods and seeds must each name at least one value")
        for name in ("scale", "temperature", "layer_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        student_depth = 3 if self.student == "minilm3" else self.layers
        if any(m.startswith("lead") for m in self.methods) and self.num_pairs > min(student_depth, 6):
            raise ValueError(
                f"num_pairs={self.num_pairs} is larger than a model's depth (student {student_depth}, teacher 6 "
                f"layers); choose at most {min(student_depth, 6)}"
            )
        if "mse" in self.methods and self.student != "minilm3" and self.width != 384:
            raise ValueError("method mse needs the teacher's width: use --student minilm3 (or --width 384)")
        if self.dataset == "user" and not self.beir_folder and not (self.corpus and self.queries and self.test_qrels):
            raise ValueError("dataset=user needs --beir-folder, or --corpus, --queries and --test-qrels")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (5e-4 if self.student == "bpe" else 1e-4)

    def inactive_fields(self) -> dict[str, str]:
        """{field: why it is unread} for this configuration (their flags are refused)."""
        out = {}
        if self.dataset != "docstrings":
            out.update(
                dict.fromkeys(("packages", "split", "held_out", "test_fraction"), f"with --dataset {self.dataset}")
            )
        elif self.split == "random":
            out["held_out"] = "with --split random (it holds out --test-fraction of every package)"
        else:
            out["test_fraction"] = "with --split package (it holds out the --held-out packages)"
        if self.dataset != "reverse_dictionary":
            out["dictionary_root"] = f"with --dataset {self.dataset}"
        if self.dataset != "user":
            user = ("beir_folder", "corpus", "queries", "test_qrels", "train_qrels")
            out.update(dict.fromkeys(user, f"with --dataset {self.dataset} (only with --dataset user)"))
        if self.student != "bpe":
            out.update(dict.fromkeys(("vocab_size", "width", "layers"), f"with --student {self.student}"))
        if self.teacher != "heads":
            out["head_steps"] = f"with --teacher {self.teacher}"
        if not any(m.startswith("lead") for m in self.methods):
            out.update(dict.fromkeys(("layer_temperature", "num_pairs", "resample_every"), "without a lead method"))
        return out


SMALL_PACKAGES = ("json", "email", "logging", "http", "asyncio", "xml", "unittest", "importlib", "urllib")

PRESETS = check_presets(
    LeadConfig,
    {
        "quick": LeadConfig(
            packages=("json", "email", "logging", "http"),
            split="package",
            held_out=("email",),
            negative_depth=8,
            hard_negatives=2,
            teacher_max_length=32,
            head_steps=5,
            vocab_size=400,
            width=32,
            layers=2,
            query_max_length=16,
            passage_max_length=24,
            methods=("none", "lead"),
            seeds=(0,),
            steps=4,
            batch_queries=4,
            num_pairs=2,
            outdir=None,
            progress=False,
        ),
        "tour": LeadConfig(
            packages=SMALL_PACKAGES,
            teacher_max_length=32,
            head_steps=60,
            vocab_size=2000,
            width=32,
            layers=2,
            query_max_length=16,
            passage_max_length=32,
            num_pairs=2,
            seeds=(0,),
            steps=24,
            outdir=None,
            progress=False,
        ),
        "full": LeadConfig(),
    },
)
