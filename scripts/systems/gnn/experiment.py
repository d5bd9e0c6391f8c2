"""`run(GnnConfig) -> figures`: the per-stage profile of each configured GNN layer, the paper's
findings checked on it, and node classifiers trained on a graph (the `frugal gnn profile` command
and the tour's section). The comparison with PyG is `frugal.scripts.systems.gnn.pyg_bench.run`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.systems.gnn.config import GnnConfig
from frugal.scripts.systems.gnn.node_classification import train_node_classifier
from frugal.scripts.systems.gnn.stage_profile import (
    CPU_NOTE,
    PAPER_FUSION_MS,
    PAPER_SHARES,
    findings,
    load_dataset,
    plot_shares,
    profile_markdown,
    profile_models,
)


def run(config: GnnConfig, progress=None) -> dict:
    """Profiles the configured models and trains the configured classifiers; writes the report
    (gnn_profile.json, gnn_profile.md, gnn_stage_breakdown.png) when `config.outdir` is set."""
    from frugal.jaxlib_ext import native
    from frugal.scripts.report import machine_description, machine_line, machine_record, write_json

    before = machine_description()
    models, described = profile_models(config, progress) if config.models else ({}, {})
    training = []
    if config.train_models and config.train_steps:
        data = load_dataset(config.train_dataset or config.dataset, config)
        for kind in config.train_models:
            result = train_node_classifier(kind, data, steps=config.train_steps, seed=config.seed)
            training.append(result)
            if progress:
                progress(f"train {kind}: test accuracy {result['test_accuracy']:.3f}")
    figures = {
        "config": dataclasses.asdict(config),
        "machine": machine_record(before),
        "machine_line": machine_line(before),
        "datasets": described,
        "csr_kernel": native.status("csr_matmul"),
        "models": models,
        "findings": findings(models),
        "cpu_note": CPU_NOTE,
        "training": training,
        "paper_shares": PAPER_SHARES,
        "paper_fusion_ms": PAPER_FUSION_MS,
    }
    if config.outdir:
        outdir = Path(config.outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        write_json(outdir / "gnn_profile.json", figures)
        (outdir / "gnn_profile.md").write_text(profile_markdown(figures))
        if config.plot and models:
            plot_shares(figures, outdir / "gnn_stage_breakdown.png")
            figures["plot"] = str(outdir / "gnn_stage_breakdown.png")
    return figures
