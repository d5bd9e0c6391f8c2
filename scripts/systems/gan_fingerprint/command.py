"""`frugal ganfp zoo | train | eval` and the GAN-fingerprint section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.gan_fingerprint.config import PRESETS, GanfpConfig

TOUR_ORDER = 75


def _progress(config: GanfpConfig):
    from rich.console import Console

    console = Console()
    return console, (lambda msg: console.print(f"[dim]{msg}[/dim]")) if config.progress else (lambda msg: None)


def run_zoo_command(config: GanfpConfig) -> dict:
    from frugal.scripts.report import print_table

    console, progress = _progress(config)
    from frugal.scripts.systems.gan_fingerprint.experiment import run_zoo

    figures = run_zoo(config, progress)
    rows = [
        [
            name,
            f["kind"],
            f["steps"],
            f"{f['frechet']:.3f}",
            f"{f['peak_contrast_2']:+.2f}",
            f"{f['peak_contrast_4']:+.2f}",
        ]
        for name, f in figures["families"].items()
    ]
    rows.append(
        [
            "real",
            "-",
            "-",
            f"{figures['frechet_floor']:.3f}",
            f"{figures['real']['peak_contrast_2']:+.2f}",
            f"{figures['real']['peak_contrast_4']:+.2f}",
        ]
    )
    print_table(
        f"generator zoo (real patches {figures['real_patches']})",
        ["family", "kind", "steps", "Frechet to real test", "peak N/2", "peak N/4"],
        rows,
    )
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'ganfp_zoo.md'}, spectra: ganfp_spectra.png")
    return figures


def run_train_command(config: GanfpConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.gan_fingerprint.experiment import run_train

    _, progress = _progress(config)
    figures = run_train(config, progress)
    trained, val = set(figures["train_families"]), figures["val_family"]
    rows = [
        [
            f,
            "train" if f in trained else "val" if f == val else "unseen" if f in figures["test"] else "yours",
            f"{m['ap']:.4f}",
            f"{m['acc']:.4f}",
            f"{m['real_acc']:.3f}",
            f"{m['fake_acc']:.3f}",
        ]
        for f, m in [*figures["test"].items(), *figures["user_test"].items()]
    ]
    print_table(
        f"{figures['method']} detector, seed {figures['seed']}, best step {figures['best_step']}",
        ["family", "role", "AP", "Acc", "real Acc", "fake Acc"],
        rows,
    )
    return figures


def run_eval_command(config: GanfpConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.gan_fingerprint.experiment import run_eval, summary_headers, summary_rows

    console, progress = _progress(config)
    figures = run_eval(config, progress)
    print_table(
        f"detectors (mean ± sd over seeds {list(config.seeds)}; unseen = {list(config.test_families())})",
        summary_headers(figures),
        summary_rows(figures),
    )
    print_table(
        "checks (paired over seeds)",
        ["claim", "this run", "verdict"],
        [[c["claim"], c["ours"], c["verdict"]] for c in figures["checks"]],
    )
    if config.outdir:
        console.print(f"report: {Path(config.outdir) / 'ganfp_eval.md'}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """`--full`: the whole comparison (`full` preset). Quick: one line on why it cannot fit and which
    command runs it (the zoo alone trains for about 50 minutes on 2 cores, the tour's budget is 5)."""
    from frugal.scripts.systems.gan_fingerprint.experiment import eval_markdown, run_eval
    from frugal.scripts.tour import TourSection

    title = "GAN-fingerprint augmentation: detecting images of unseen generators (zoo trained here)"
    if quick:
        return TourSection(
            title=title,
            figures={"skipped": "quick size"},
            markdown="Not run at the tour's size; see the line below.\n",
            summary=[
                (
                    "why the tour cannot show it",
                    "the 8-family generator zoo trains for about 40-50 min on 2 cores and 21 detectors for about 25 "
                    "more; `frugal ganfp eval --preset debian` runs it with 28 real photos (after `apt install "
                    "mate-backgrounds plasma-workspace-wallpapers`; `frugal ganfp eval` with the wheels' 7), cached "
                    "and resumable, its table in scripts/systems/gan_fingerprint/README.md",
                )
            ],
        )
    config = dataclasses.replace(PRESETS["full"], outdir=str(outdir), progress=False)
    figures = run_eval(config)  # also writes ganfp_eval.{json,md} and the two plots into the tour's folder
    summary = [
        (
            f"{name}: mean unseen AP / Acc ({len(config.test_families())} unseen families, {len(config.seeds)} seeds)",
            f"{s['unseen_ap']['mean']:.3f} ± {s['unseen_ap']['sd']:.3f} / {s['unseen_acc']['mean']:.3f} "
            f"(in-family AP {s['train_ap']['mean']:.3f})",
        )
        for name, s in figures["summary"].items()
    ]
    summary += [(c["claim"], f"{c['verdict']}: {c['ours']}") for c in figures["checks"]]
    return TourSection(
        title=title,
        figures=figures,
        markdown=eval_markdown(figures).split("\n", 1)[1],
        summary=summary,
        plots=["ganfp_spectra.png", "ganfp_examples.png"],
    )


_DETECTOR = (
    "methods",
    "seeds",
    "depth",
    "det_width",
    "det_steps",
    "det_batch",
    "det_lr",
    "eval_every",
    "aug_prob",
    "perturb_modes",
    "mut_range",
    "mix_min_weight",
    "mix_weight",
    "mix_from",
    "train_families",
    "val_family",
    "train_method",
)
ZOO_UNUSED = _DETECTOR
TRAIN_UNUSED = ("methods",)
EVAL_UNUSED = ("train_method",)

COMMANDS = [
    config_command(
        ("ganfp", "zoo"),
        "train (or load) the generator zoo and the fingerprint AE; report quality and spectra",
        GanfpConfig,
        PRESETS,
        run_zoo_command,
        unused_fields=ZOO_UNUSED,
    ),
    config_command(
        ("ganfp", "train"),
        "train one detector method (first seed) and test it on every family",
        GanfpConfig,
        PRESETS,
        run_train_command,
        unused_fields=TRAIN_UNUSED,
    ),
    config_command(
        ("ganfp", "eval"),
        "compare every detector method over seeds on the zoo (the paper's claim, checked)",
        GanfpConfig,
        PRESETS,
        run_eval_command,
        unused_fields=EVAL_UNUSED,
    ),
]
