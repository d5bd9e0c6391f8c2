"""`frugal ctt data | train | cv` and the CTT-Net section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.ctt_net.config import PRESETS, CttConfig

TOUR_ORDER = 70


def _progress(config: CttConfig):
    from rich.console import Console

    console = Console()
    return console, (lambda msg: console.print(f"[dim]{msg}[/dim]")) if config.progress else (lambda msg: None)


def run_data_command(config: CttConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.ctt_net.experiment import run_data

    console, progress = _progress(config)
    figures = run_data(config, progress)
    rows = []
    for setting, d in figures["settings"].items():
        share = d.get("damage_share", {})
        rows.append(
            [
                setting,
                d["eyes"],
                f"{d['pre_logmar_mean']:.2f} ± {d['pre_logmar_sd']:.2f}",
                f"{d['post_logmar_mean']:.2f} ± {d['post_logmar_sd']:.2f}",
                f"{d['corr_pre_post_logmar']:.2f}",
                f"{d['effective_share']:.2f}",
                f"{share.get('h_only', 0) + share.get('v_only', 0):.2f}" if share else "-",
            ]
        )
    print_table(
        "CTT-Net eyes (logMAR; cohort target: pre 0.60 ± 0.39, post 0.14 ± 0.18)",
        ["setting", "eyes", "pre-op", "post-op", "corr(pre, post)", "gain >= 0.2", "one-view damage"],
        rows,
    )
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'ctt_data.json'}")
    return figures


def run_train_command(config: CttConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.ctt_net.experiment import run_train
    from frugal.scripts.systems.ctt_net.metrics import METRICS

    _, progress = _progress(config)
    figures = run_train(config, progress)
    rows = [[figures["model"], "frozen features"] + [f"{figures['result'][m]:.4f}" for m in METRICS]]
    if "end_to_end" in figures:
        rows.append([figures["model"], "end to end"] + [f"{figures['end_to_end'][m]:.4f}" for m in METRICS])
    print_table(
        f"{figures['setting']} setting, test fold {figures['fold']}, seed {figures['seed']}",
        ["model", "training", *METRICS],
        rows,
    )
    return figures


def run_cv_command(config: CttConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.ctt_net.experiment import summary_rows
    from frugal.scripts.systems.ctt_net.metrics import METRICS

    console, progress = _progress(config)
    from frugal.scripts.systems.ctt_net.experiment import run_cv

    figures = run_cv(config, progress)
    for setting, res in figures["results"].items():
        print_table(
            f"{setting}: mean ± fold sd over {config.folds} folds x seeds {list(config.seeds)}",
            ["model", "what", *METRICS],
            summary_rows(res["summary"]),
        )
        if "end_to_end" in res:
            print_table(
                f"{setting}, end to end (seeds {list(config.seeds)})",
                ["model", "what", *METRICS],
                summary_rows(res["end_to_end"]["summary"]),
            )
    print_table(
        "checks (paired over folds x seeds; holds = beyond 2 SE)",
        ["claim", "this run", "verdict"],
        [[c["claim"], c["ours"], c["verdict"]] for c in figures["checks"]],
    )
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'ctt_cv.md'}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """Cross-validation on a small simulated cohort: CTT-Net against pre-op VA alone and late fusion
    (+ pre-op VA), with the attention-flow plot; at this size it says why it cannot show the claim."""
    from frugal.scripts.systems.ctt_net.experiment import cv_markdown, plot_attention_flow, run_cv
    from frugal.scripts.tour import TourSection

    config = dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=None, progress=False)
    figures = run_cv(config)
    plots = []
    if figures["analysis"].get("attention_flow"):
        plot_attention_flow(figures["analysis"]["attention_flow"], Path(outdir) / "ctt_attention_flow.png")
        plots.append("ctt_attention_flow.png")
    data = figures["results"]["default"]["data"]
    default = figures["results"]["default"]["summary"]
    summary = [
        (
            "simulated cohort: pre-op / post-op logMAR (cohort target 0.60 ± 0.39 / 0.14 ± 0.18)",
            f"{data['pre_logmar_mean']:.2f} ± {data['pre_logmar_sd']:.2f} / "
            f"{data['post_logmar_mean']:.2f} ± {data['post_logmar_sd']:.2f} ({data['eyes']} eyes)",
        ),
    ]
    flow = figures["analysis"].get("attention_flow", {}).get("ctt")
    if flow:
        m = flow["matrix"]
        summary.append(
            ("CTT-Net: attention between the two views' feature tokens (must be 0)", f"{m[0][2]:.3f} / {m[2][0]:.3f}")
        )
    summary += [
        (
            f"{name} RMSE / F1 (default setting, {config.folds} folds)",
            f"{s['rmse']['mean']:.3f} ± {s['rmse']['fold_sd']:.3f} / {s['f1']['mean']:.3f}",
        )
        for name, s in default.items()
    ]
    summary += [(c["claim"], f"{c['verdict']}: {c['ours']}") for c in figures["checks"]]
    if (
        quick
        and {"ctt", "pre_only"} <= set(default)
        and default["ctt"]["rmse"]["mean"] >= default["pre_only"]["rmse"]["mean"]
    ):
        summary.append(
            (
                "why the tour cannot show the claim",
                f"{data['eyes']} eyes at {data['image_shape'][0]}x{data['image_shape'][1]} give per-view features too "
                "weak to beat pre-op VA alone; `frugal ctt cv` (2,000 eyes, 4 folds x 2 seeds, about an hour) is the "
                "comparison, its table in scripts/systems/ctt_net/README.md",
            )
        )
    return TourSection(
        title="CTT-Net: post-op visual acuity from two OCT views + pre-op VA (simulated macula)",
        figures=figures,
        markdown=cv_markdown(figures).split("\n", 1)[1],
        summary=summary,
        plots=plots,
    )


# What each command never reads (the three share CttConfig): no flag, so passing one is an error.
_TRAINING = (
    "models",
    "control_models",
    "folds",
    "seeds",
    "validation_fraction",
    "backbone_fraction",
    "backbone_width",
    "backbone_depth",
    "backbone_steps",
    "backbone_batch",
    "backbone_lr",
    "head_dim",
    "rounds",
    "dropout",
    "head_steps",
    "head_batch",
    "head_lr",
    "optimizer",
    "hinge_weight",
    "eval_every",
    "end_to_end",
    "e2e_steps",
    "e2e_batch",
    "e2e_lr",
)
DATA_UNUSED = _TRAINING + ("train_model", "test_fold")
TRAIN_UNUSED = ("models", "control_models")
CV_UNUSED = ("train_model", "test_fold")

COMMANDS = [
    config_command(
        ("ctt", "data"),
        "build (or load) the two-view OCT eyes and describe them",
        CttConfig,
        PRESETS,
        run_data_command,
        unused_fields=DATA_UNUSED,
    ),
    config_command(
        ("ctt", "train"),
        "train one model on one fold and report its test figures",
        CttConfig,
        PRESETS,
        run_train_command,
        unused_fields=TRAIN_UNUSED,
    ),
    config_command(
        ("ctt", "cv"),
        "cross-validate CTT-Net against its baselines and the controls",
        CttConfig,
        PRESETS,
        run_cv_command,
        unused_fields=CV_UNUSED,
    ),
]
