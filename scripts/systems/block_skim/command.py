"""`frugal skim` and the Block-Skim section of the tour: Block-Skim on the real all-MiniLM-L6-v2 for extractive QA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.configs import preset_help
from frugal.scripts.systems.block_skim.config import PRESETS, SkimConfig

TOUR_ORDER = 45
HELP = "Block-Skim: fine-tune MiniLM for QA with skim predictors, prune blocks, report F1 vs FLOPs/wall-clock"
DESCRIPTION = (
    "Fine-tunes all-MiniLM-L6-v2 with a span head on the built-in offline fact-QA set (long passages of "
    "real sentences, one of which states the answer; --distractors adds look-alike facts) twice: plain "
    "QA loss (vanilla) and the joint Block-Skim loss (skim predictors on the diagonal 32x32 attention "
    "blocks). Then evaluates EM/F1 of the unpruned model and of pruned inference at several thresholds, "
    "the FLOPs speedup counted from the tokens each layer processes, and wall-clock speedup at batch 1 on "
    "this CPU (timed under the benchmark lock), next to the paper's BERT-base SQuAD figures. "
    "Every training step runs through the shared Trainer, whose workdirs under --cache-dir are the cache: "
    "a rerun restores them and only evaluates. --predictor-features diagonal is the paper's method and training "
    "(joint loss only, more steps, no refit). Writes OUTDIR/skim[_LABEL].{json,md,png} and the joint "
    "fine-tune's skim-loss curve OUTDIR/skim[_LABEL]_loss.png. Presets: " + preset_help(PRESETS)
)

# The tour's headline: a pruned setting at least this much cheaper, within this many F1 points of unpruned.
TOUR_MIN_FLOPS_SPEEDUP = 1.5
TOUR_MAX_F1_DROP = 3.0


def run_and_print(config: SkimConfig) -> dict:
    from frugal.scripts import report
    from frugal.scripts.systems.block_skim.evaluation import tables
    from frugal.scripts.systems.block_skim.experiment import run

    figures = run(config)
    for title, headers, rows in tables(figures):
        report.print_table(title, headers, rows)
    print(f"checks: {figures['checks']}")
    name = "skim" if figures["label"] == "full" else f"skim_{figures['label']}"
    print(f"report: {Path(config.outdir) / (name + '.md')}")
    return figures


def cached_tour_config(outdir) -> SkimConfig | None:
    """When `frugal skim` has cached its full-size fine-tunes, the tour evaluates them on a dev slice."""
    from frugal.scripts.systems.block_skim.training import fine_tune_workdir, finished, fully_cached

    full = PRESETS["full"]
    if not fully_cached(full, vanilla=False):
        return None
    # The per-layer thresholds picked on held-out training windows join the sweep by themselves.
    return dataclasses.replace(
        full,
        n_dev=8,
        thresholds=(0.0,),
        paper_thresholds=(),
        timing_examples=4,
        timing_repeats=1,
        eval_batch_size=8,
        train_vanilla=finished(fine_tune_workdir(full, skim=False), full.steps),
        diagnostics=False,
        outdir=str(outdir),
        label="tour_cached",
        progress=False,
        lock_timeout_s=5.0,
    )


def headline(figures: dict) -> dict | None:
    """The cheapest pruned setting (largest FLOPs speedup) whose F1 is within TOUR_MAX_F1_DROP of unpruned."""
    from frugal.scripts.systems.block_skim.evaluation import prunes

    ref = figures["block_skim_unpruned"]["f1"]
    ok = [r for r in figures["sweep"] if prunes(r["threshold"]) and r["f1"] >= ref - TOUR_MAX_F1_DROP]
    return max(ok, key=lambda r: r["flops_speedup"]) if ok else None


def _threshold_name(threshold) -> str:
    if isinstance(threshold, (tuple, list)):
        return f"threshold {list(threshold)} (picked on held-out training windows)"
    return f"threshold {threshold}"


def tour_section(quick: bool, outdir: Path):
    """Block-Skim on MiniLM: a real fine-tune on short windows (or the cached full-size one), then F1 against
    the FLOPs and batch-1 wall-clock of pruning after layer 0."""
    from frugal.scripts.systems.block_skim.evaluation import markdown
    from frugal.scripts.systems.block_skim.experiment import run
    from frugal.scripts.tour import TourSection

    config = cached_tour_config(outdir / "skim") if quick else None
    if config is None:
        config = dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=str(outdir / "skim"))
    figures = run(config)
    cached = figures["label"] == "tour_cached"
    timing = figures.get("timing", {}).get("speedup", {})
    unpruned = figures["block_skim_unpruned"]
    best = headline(figures)
    if cached:
        what = "full-size fine-tune (cached by `frugal skim`)"
    elif figures["train"]["block_skim"]["from_cache"]:
        what = f"{figures['label']} fine-tune (restored from its cache)"
    else:
        what = f"{figures['label']} fine-tune (trained now)"
    summary = [
        (
            f"{what}, unpruned F1 / EM",
            f"{unpruned['f1']:.1f} / {unpruned['exact_match']:.1f}",
        )
    ]
    if best is not None:
        wall = timing.get(f"skim@{best['threshold']}", float("nan"))
        summary.append(
            (
                f"pruned, {_threshold_name(best['threshold'])}: F1 / FLOPs speedup / wall-clock b=1",
                f"{best['f1']:.1f} / {best['flops_speedup']:.2f}x / {wall:.2f}x",
            )
        )
    met = best is not None and best["flops_speedup"] >= TOUR_MIN_FLOPS_SPEEDUP
    summary.append(
        (
            f"target: >= {TOUR_MIN_FLOPS_SPEEDUP}x FLOPs within {TOUR_MAX_F1_DROP:g} F1 of unpruned",
            "met"
            if met
            else "not met at this size: too few fine-tuning steps and fit windows for the predictor; "
            "`frugal skim` (the full preset) meets it",
        )
    )
    if "threshold0_answers_identical" in figures:
        summary.append(("threshold 0 answers identical to unpruned", str(figures["threshold0_answers_identical"])))
    plots = [str(Path(figures[k]).relative_to(outdir)) for k in ("plot", "loss_plot") if figures.get(k)]
    kind = "cached full-size fine-tune, 8 dev examples" if cached else f"the {figures['label']} preset"
    return TourSection(
        title=f"Block-Skim on MiniLM (skim, {kind})",
        figures=figures,
        markdown=markdown(figures, include_plot=False),
        summary=summary,
        plots=plots,
    )


COMMANDS = [config_command(("skim",), HELP, SkimConfig, PRESETS, run_and_print, description=DESCRIPTION)]
