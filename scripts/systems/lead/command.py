"""`frugal lead data | distill | eval` and the LEAD section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.lead.config import PRESETS, LeadConfig

TOUR_ORDER = 80


def _progress(config: LeadConfig):
    from rich.console import Console

    console = Console()
    return console, (lambda msg: console.print(f"[dim]{msg}[/dim]")) if config.progress else (lambda msg: None)


def _metric_rows(rows: dict) -> list[list]:
    from frugal.scripts.systems.lead.experiment import REPORT_METRICS

    return [[name] + [f"{row[m]:.4f}" for m in REPORT_METRICS] for name, row in rows.items()]


def run_data_command(config: LeadConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.lead.experiment import run_data

    console, progress = _progress(config)
    figures = run_data(config, progress)
    s = figures["set"]
    print_table(
        f"retrieval set {s['name']}",
        ["passages", "training queries", "held-out queries", "words per passage", "words per query"],
        [
            [
                s["passages"],
                s["train_queries"],
                s["test_queries"],
                f"{s['mean_passage_words']:.1f}",
                f"{s['mean_query_words']:.1f}",
            ]
        ],
    )
    if "example" in figures:
        e = figures["example"]
        console.print(
            f"query: {e['query']}\npositive: {e['positive'][:160]}\nhard negative: {e['hard_negative'][:160]}"
        )
    return figures


def run_eval_command(config: LeadConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.lead.experiment import REPORT_METRICS, TEACHER_LAYERS, run_eval

    _, progress = _progress(config)
    figures = run_eval(config, progress)
    print_table(
        f"held-out queries of {figures['set']['name']}", ["retriever", *REPORT_METRICS], _metric_rows(figures["rows"])
    )
    print_table(
        "teacher MRR@10 by layer",
        ["teacher", *(str(i + 1) for i in range(TEACHER_LAYERS))],
        [[name] + [f"{m['mrr@10']:.3f}" for m in per_layer] for name, per_layer in figures["teacher_layers"].items()],
    )
    return figures


def run_distill_command(config: LeadConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.lead.experiment import REPORT_METRICS, run_distill

    console, progress = _progress(config)
    figures = run_distill(config, progress)
    rows = _metric_rows(figures["references"]["rows"])
    for method, row in figures["summary"].items():
        rows.append([f"student, {method}"] + [f"{row[m]['mean']:.4f} ± {row[m]['sd']:.4f}" for m in REPORT_METRICS])
    print_table(
        f"{figures['set']['name']}: student {figures['student']}, mean ± sd over seeds {list(config.seeds)}",
        ["retriever", *REPORT_METRICS],
        rows,
    )
    if figures["checks"]:
        print_table(
            "checks (seed-paired; holds = beyond 2 SE)",
            ["claim", "this run", "verdict"],
            [[c["claim"], c["ours"], c["verdict"]] for c in figures["checks"]],
        )
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'lead_distill.md'}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """A student with its own tokenizer distilled from MiniLM on the standard library's documentation,
    by no KD, response KD and LEAD, beside BM25 and the teacher."""
    from frugal.scripts.systems.lead.experiment import distill_markdown, run_distill
    from frugal.scripts.tour import TourSection

    config = dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=None, progress=False)
    figures = run_distill(config)
    s = figures["set"]
    rows = figures["references"]["rows"]
    summary = [
        (
            "set: documentation of " + ", ".join(config.packages[:4]) + ", ...",
            f"{s['passages']} passages, {s['train_queries']} training / {s['test_queries']} held-out queries",
        ),
        (
            "MRR@10 BM25 / teacher (MiniLM, frozen) / teacher with heads",
            " / ".join(f"{r['mrr@10']:.3f}" for r in rows.values()),
        ),
    ]
    summary += [
        (f"student ({config.student}, own tokenizer) MRR@10, {method}", f"{row['mrr@10']['mean']:.3f}")
        for method, row in figures["summary"].items()
    ]
    summary += [(c["claim"], f"{c['verdict']}: {c['ours']}") for c in figures["checks"]]
    means = {m: r["mrr@10"]["mean"] for m, r in figures["summary"].items()}
    if quick and not (means.get("lead", 0) > means.get("response", 0) > means.get("none", 0)):
        summary.append(
            (
                "why the tour cannot show the claim",
                f"{s['train_queries']} training queries, {config.steps} steps and one seed are too few to order the "
                "methods; `frugal lead distill` (4,231 passages, 3 seeds per method) is the comparison, its table "
                "in scripts/systems/lead/README.md",
            )
        )
    return TourSection(
        title="LEAD: layer-wise score distillation for dense retrieval (MiniLM teacher, own-tokenizer student)",
        figures=figures,
        markdown=distill_markdown(figures).split("\n", 1)[1],
        summary=summary,
    )


# What each command never reads (the three share LeadConfig): no flag, so passing one is an error.
_STUDENT = (
    "student",
    "vocab_size",
    "width",
    "layers",
    "passage_max_length",
    "methods",
    "seeds",
    "steps",
    "batch_queries",
    "lr",
    "temperature",
    "layer_temperature",
    "num_pairs",
    "resample_every",
    "hard_negatives",
)
DATA_UNUSED = _STUDENT + ("teacher", "head_steps", "scale")
EVAL_UNUSED = _STUDENT

COMMANDS = [
    config_command(
        ("lead", "data"),
        "build (or load) the retrieval set, mine hard negatives, describe it",
        LeadConfig,
        PRESETS,
        run_data_command,
        unused_fields=DATA_UNUSED,
    ),
    config_command(
        ("lead", "eval"),
        "score BM25 and the MiniLM teacher (every layer, frozen and with heads) on the held-out queries",
        LeadConfig,
        PRESETS,
        run_eval_command,
        unused_fields=EVAL_UNUSED,
    ),
    config_command(
        ("lead", "distill"),
        "distill students by each method over seeds and compare them with BM25 and the teacher",
        LeadConfig,
        PRESETS,
        run_distill_command,
        unused_fields=(),
    ),
]
