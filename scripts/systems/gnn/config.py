"""Settings of the GNN characterization (Zhang et al., IEEE CAL 2020, arXiv 2009.00804).

`GnnConfig` is the system's config: the per-stage profile and the node-classification runs
(`frugal gnn profile`, the tour's section). `GnnBenchConfig` is the comparison with PyTorch
Geometric (`frugal gnn bench`); flags of both are derived from their fields by
`frugal.scripts.configs`.
"""

from __future__ import annotations

import dataclasses

from frugal.models.gnn_layers import GNN_KINDS
from frugal.scripts.configs import check_presets, knob
from frugal.scripts.systems.gnn import graph_data

BENCH_MODELS = ("gcn", "gat", "sage")


@dataclasses.dataclass(frozen=True)
class GnnConfig:
    """One layer of each model profiled stage by stage, then node classifiers trained on a graph."""

    models: tuple[str, ...] = knob(
        ("gcn", "gat", "ggnn", "rgcn", "sage_lstm", "sage", "gin"),
        "models to profile (no value: profile none)",
        choices=GNN_KINDS,
        allow_empty=True,
    )
    dataset: str = knob("cora", f"graph of every profiled model except RGCN; one of {list(graph_data.DATASET_SIZES)}")
    relational_dataset: str = knob("aifb", f"graph of RGCN (needs edge types); one of {list(graph_data.ENTITIES)}")
    data_root: str | None = knob(
        None, "folder with the raw Planetoid files (ind.<name>.*); none: seeded synthetic graphs of the same size"
    )
    entities_root: str | None = knob(
        None, "folder with <name>_stripped.nt[.gz], trainingSet.tsv, testSet.tsv; none: a synthetic entity graph"
    )
    scale: float = knob(1.0, "shrink the synthetic graphs by this factor (0 < scale <= 1)")
    features: int = knob(64, "width of the profiled layer, input and output")
    heads: int = knob(8, "GAT heads (each features / heads wide)")
    num_bases: int | None = knob(8, "RGCN basis matrices (none: one matrix per relation, E*F*F memory)")
    repeats: int = knob(20, "timed runs per stage (median; GraphSAGE-LSTM takes a fifth)")
    seed: int = knob(0, "random seed of the graphs, features, weights and training")
    train_models: tuple[str, ...] = knob(
        ("gcn", "gat"), "node classifiers to train (no value: train none)", choices=GNN_KINDS, allow_empty=True
    )
    train_steps: int = knob(200, "full-graph training steps (0: no training)")
    train_dataset: str | None = knob(None, "graph the classifiers train on (none: the profiled `dataset`)")
    outdir: str | None = knob("reports/gnn", "where gnn_profile.{json,md} and the stage plot go (none: nowhere)")
    plot: bool = knob(True, "draw the stage-share plot into outdir")

    def inactive_fields(self) -> dict[str, str]:
        """Fields these settings never read (`frugal.scripts.configs.check_inactive_flags`)."""
        inactive = {}
        if "gat" not in self.models:
            inactive["heads"] = "unless --models profiles gat"
        if "rgcn" not in self.models:
            for name in ("relational_dataset", "entities_root", "num_bases"):
                inactive[name] = "unless --models profiles rgcn"
        if not (self.train_models and self.train_steps):
            inactive["train_dataset"] = "without training (--train-models empty or --train-steps 0)"
        if self.outdir is None:
            inactive["plot"] = "with --outdir none (nothing is written)"
        return inactive

    def __post_init__(self):
        unknown = [m for m in self.models + self.train_models if m not in GNN_KINDS]
        if unknown:
            raise ValueError(f"models {unknown} are not known; choose from {GNN_KINDS}")
        if not self.models and not self.train_models:
            raise ValueError("nothing to do: models and train_models are both empty")
        for field, name in (
            ("dataset", self.dataset),
            ("relational_dataset", self.relational_dataset),
            ("train_dataset", self.train_dataset or self.dataset),
        ):
            if name.lower() not in graph_data.DATASET_SIZES:
                raise ValueError(f"{field}={name!r} is not known; use one of {list(graph_data.DATASET_SIZES)}")
        if self.relational_dataset.lower() not in graph_data.ENTITIES and "rgcn" in self.models:
            raise ValueError(f"relational_dataset must be one of {graph_data.ENTITIES} (RGCN needs edge types)")
        if self.heads < 1 or self.features < 1 or self.features % self.heads:
            raise ValueError(f"features={self.features} must be positive and divisible by heads={self.heads}")
        if self.num_bases is not None and self.num_bases < 1:
            raise ValueError(f"num_bases={self.num_bases} must be >= 1 (or none: one matrix per relation)")
        if self.repeats < 1 or self.train_steps < 0:
            raise ValueError(f"repeats={self.repeats} must be >= 1 and train_steps={self.train_steps} >= 0")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")


@dataclasses.dataclass(frozen=True)
class GnnBenchConfig:
    """2-layer inference, ours beside PyTorch Geometric, in alternating rounds of timed calls.

    A second dataclass because its options differ entirely from `GnnConfig`'s: it covers only the
    three models PyG's comparison has (GCN, GAT, SAGE), times whole 2-layer classifiers at their
    dataset widths rather than one layer's stages, and needs an interpreter with torch for its
    worker process; no field would mean the same thing in both.
    """

    datasets: tuple[str, ...] = knob(("cora", "pubmed"), f"graphs; any of {list(graph_data.DATASET_SIZES)}")
    models: tuple[str, ...] = knob(BENCH_MODELS, f"models; any of {list(BENCH_MODELS)}")
    hidden: int = knob(16, "GCN/SAGE hidden width (GAT: heads x 8)")
    heads: int = knob(8, "GAT heads")
    repeats: int = knob(60, "timed calls per variant (median)")
    calls_per_round: int = knob(5, "ours and PyG's paths take turns in rounds of this many calls")
    threads: int = knob(2, "torch threads of the PyG worker (OMP/MKL pools pinned to the same count)")
    pyg_python: str | None = knob(
        None,
        "python with torch + torch_geometric (none: this one if it has them, else $FRUGAL_PYG_PYTHON); "
        "PyG then runs in a worker process of it",
    )
    data_root: str | None = knob(None, "folder with the raw Planetoid files; none: seeded synthetic graphs")
    seed: int = knob(0, "random seed of the graphs and weights")
    outdir: str | None = knob("reports/gnn", "where gnn_bench.{json,md} go (none: nowhere)")

    def __post_init__(self):
        bad = [m for m in self.models if m not in BENCH_MODELS]
        if bad or not self.models:
            raise ValueError(f"models {bad or '()'} not allowed; the PyG comparison covers {BENCH_MODELS}")
        if not self.datasets:
            raise ValueError("datasets must name at least one graph")
        unknown = [d for d in self.datasets if d.lower() not in graph_data.DATASET_SIZES]
        if unknown:
            raise ValueError(f"datasets {unknown} are not known; use any of {list(graph_data.DATASET_SIZES)}")
        if min(self.repeats, self.calls_per_round, self.threads, self.hidden, self.heads) < 1:
            raise ValueError("repeats, calls_per_round, threads, hidden and heads must be >= 1")


PRESETS = check_presets(
    GnnConfig,
    {
        # The tests' size: graphs a tenth of the paper's (at a twentieth, Cora has no test split
        # left), one timed run per stage, a few training steps.
        "quick": GnnConfig(
            models=("gcn", "rgcn", "sage_lstm"),
            scale=0.1,
            features=8,
            heads=2,
            repeats=1,
            num_bases=2,
            train_models=("gcn",),
            train_steps=20,
        ),
        # A Cora-shaped graph at a third of the size; every stage still runs separately.
        "tour": GnnConfig(
            models=("gcn", "gat", "rgcn", "sage_lstm"),
            scale=0.3,
            features=32,
            repeats=3,
            num_bases=4,
            train_models=("gcn",),
            train_steps=50,
        ),
        "full": GnnConfig(),
    },
)
BENCH_PRESETS = check_presets(
    GnnBenchConfig,
    {
        "quick": GnnBenchConfig(datasets=("citeseer",), models=("gcn",), repeats=1),
        "tour": GnnBenchConfig(datasets=("cora",), repeats=20),
        "full": GnnBenchConfig(),
    },
)
