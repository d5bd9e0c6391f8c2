"""frugal skim: Block-Skim on the real all-MiniLM-L6-v2 for extractive QA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

COMMAND = ("skim",)
HELP = "Block-Skim: fine-tune MiniLM for QA with skim predictors, prune blocks, report F1 vs FLOPs/wall-clock"
DESCRIPTION = (
    "Fine-tunes all-MiniLM-L6-v2 with a span head on the built-in offline fact-QA set (long passages of "
    "real sentences, one of which states the answer; --distractors adds look-alike facts) twice: plain "
    "QA loss (vanilla) and the joint Block-Skim loss (skim predictors on the diagonal 32x32 attention "
    "blocks). Then evaluates EM/F1 of the unpruned model and of pruned inference at several thresholds, "
    "the FLOPs speedup counted from the tokens each layer processes, and wall-clock speedup at batch 1 on "
    "this CPU (timed under the shared benchmark lock), next to the paper's BERT-base SQuAD figures. "
    "Fine-tuned weights are cached (--cache-dir) so a rerun only evaluates. Writes "
    "reports/skim/skim.{json,md,png}."
)
TOUR_ORDER = 45


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--thresholds {text!r}: use comma-separated numbers in [0, 1], e.g. 0,0.3,0.5") from None
    if not values:
        raise ValueError("--thresholds is empty")
    return values


def _token_range(text: str) -> tuple[int, int]:
    import argparse

    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI token counts, e.g. 300,360") from None
    return lo, hi


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"layer list {text!r}: use comma-separated layer indices, e.g. 0,1") from None


def add_arguments(parser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small honest run (seq 128, a short fine-tune on a small slice; numbers labelled quick)",
    )
    parser.add_argument("--train-steps", type=int, default=None, help="fine-tuning steps per model (default 100)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default 8)")
    parser.add_argument("--n-train", type=int, default=None, help="built-in training examples (default 3000)")
    parser.add_argument("--n-dev", type=int, default=None, help="built-in dev examples (default 200)")
    parser.add_argument(
        "--distractors",
        type=int,
        default=None,
        help="look-alike facts per built-in passage besides the answer fact (default 0: the answer "
        "fact among real filler sentences; 3: the harder set, with same-relation/other-subject "
        "and same-subject/other-relation facts)",
    )
    parser.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="window length in tokens, a multiple of 32 up to 512 (default 512)",
    )
    parser.add_argument(
        "--context-tokens",
        type=_token_range,
        default=None,
        help="built-in passage length range LO,HI in WordPiece tokens (default 440,490)",
    )
    parser.add_argument("--thresholds", type=_floats, default=None, help="keep thresholds (default 0,0.01,0.1,0.5)")
    parser.add_argument(
        "--prune-layers", type=_ints, default=None, help="predictor layers used to prune at inference (default 0)"
    )
    parser.add_argument(
        "--predictor-layers", type=_ints, default=None, help="layers that get a trained predictor (default 0,1,2,3,4)"
    )
    parser.add_argument(
        "--label-rule",
        default=None,
        choices=("any", "more_than_one"),
        help="block label: any answer token (default) or the reference's more-than-one rule",
    )
    parser.add_argument(
        "--predictor-features",
        default=None,
        choices=("diagonal", "diagonal+question", "diagonal+question+match"),
        help="skim predictor input: the paper's diagonal blocks alone, or (our extensions) plus "
        "question<->block attention features, or plus those and hidden-state question matching "
        "with an MLP head (default); the extensions get per-layer thresholds picked on held-out "
        "training windows, and the paper's predictor is swept beside the match one",
    )
    parser.add_argument(
        "--question-layers",
        type=_ints,
        default=None,
        help="layers whose extended predictors are fitted (default 0); must cover --prune-layers",
    )
    parser.add_argument(
        "--fit-windows",
        type=int,
        default=None,
        help="training windows the extended predictors are fitted on (default 2600)",
    )
    parser.add_argument(
        "--selection-windows",
        type=int,
        default=None,
        help="held-out training windows the per-layer thresholds are picked on (default 400)",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        default=None,
        help="answer-block recall the per-layer thresholds keep on held-out training windows (default 1.0)",
    )
    parser.add_argument("--beta", type=float, default=None, help="keep-class weight (default 20)")
    parser.add_argument("--alpha", type=float, default=None, help="skim loss weight (default 0.1)")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the vanilla (no Block-Skim) fine-tune")
    parser.add_argument("--timing-examples", type=int, default=None, help="dev windows timed at batch 1 (default 30)")
    parser.add_argument("--cache-dir", default=None, help="fine-tuned weights cache (default reports/skim/cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outdir", default="reports/skim", help="where reports go (default reports/skim)")


def _config(args):
    from frugal.scripts.skim_experiments import SkimExperimentConfig

    base = quick_config(args.outdir) if args.quick else SkimExperimentConfig(outdir=args.outdir)
    overrides = {"seed": args.seed, "outdir": args.outdir}
    for field, value in (
        ("train_steps", args.train_steps),
        ("batch_size", args.batch_size),
        ("n_train", args.n_train),
        ("n_dev", args.n_dev),
        ("thresholds", args.thresholds),
        ("distractors", args.distractors),
        ("max_seq_len", args.max_seq_len),
        ("context_tokens", args.context_tokens),
        ("prune_layers", args.prune_layers),
        ("predictor_layers", args.predictor_layers),
        ("label_rule", args.label_rule),
        ("beta", args.beta),
        ("alpha", args.alpha),
        ("timing_examples", args.timing_examples),
        ("cache_dir", args.cache_dir),
        ("predictor_features", args.predictor_features),
        ("target_recall", args.target_recall),
        ("question_layers", args.question_layers),
        ("question_fit_windows", args.fit_windows),
        ("selection_windows", args.selection_windows),
    ):
        if value is not None:
            overrides[field] = value
    if args.no_vanilla:
        overrides["train_vanilla"] = False
    return dataclasses.replace(base, **overrides)


def run_command(args) -> dict:
    from frugal.scripts import report
    from frugal.scripts.skim_experiments import run, tables

    figures = run(_config(args))
    for title, headers, rows in tables(figures):
        report.print_table(title, headers, rows)
    print(f"checks: {figures['checks']}")
    name = "skim" if figures["label"] == "full" else f"skim_{figures['label']}"
    print(f"report: {Path(args.outdir) / (name + '.md')}")
    return figures


def quick_config(outdir, *, tour: bool = False):
    """Seq 128 (4 blocks), a short fine-tune on a small slice; honest numbers, labelled quick."""
    from frugal.scripts.skim_experiments import SkimExperimentConfig

    return SkimExperimentConfig(
        n_train=16 if tour else 400,
        n_dev=12 if tour else 100,
        max_seq_len=128,
        context_tokens=(90, 110),
        train_steps=2 if tour else 60,
        batch_size=4 if tour else 8,
        diagnostics=not tour,
        learning_rate=2e-4,
        predictor_layers=(0,) if tour else (0, 1),
        prune_layers=(0,),
        thresholds=(0.0, 0.5) if tour else (0.0, 0.3, 0.5, 0.7),
        train_vanilla=not tour,
        timing_examples=4 if tour else 20,
        timing_repeats=1,
        eval_batch_size=24,
        cache_dir=None,
        outdir=str(outdir),
        label="quick",
        progress=not tour,
        lock_timeout_s=5.0 if tour else None,
        refine_layers=(0,),
        question_fit_steps=200,
        question_fit_windows=300,
        selection_windows=100,
        # the tour's 16 windows are too few to fit and select the match heads: it shows the paper's predictor
        **({"predictor_features": "diagonal"} if tour else {}),
    )


def cached_tour_config(outdir):
    """When `frugal skim` has cached its full-size fine-tunes, the tour evaluates them on a dev slice."""
    from frugal.scripts.skim_experiments import SkimExperimentConfig, cache_path, fully_cached

    full = SkimExperimentConfig()
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
        train_vanilla=cache_path(full, skim=False).is_file(),
        diagnostics=False,
        outdir=str(outdir),
        label="tour_cached",
        progress=False,
        lock_timeout_s=5.0,
    )


def tour_section(quick: bool, outdir: Path):
    from frugal.scripts.skim_experiments import markdown, run
    from frugal.scripts.tour import TourSection

    config = cached_tour_config(outdir / "skim")
    if config is None:
        config = quick_config(outdir / "skim", tour=True) if quick else quick_config(outdir / "skim")
    figures = run(config)
    best = max(figures["sweep"], key=lambda r: r["flops_speedup"])
    timing = figures.get("timing", {}).get("speedup", {})
    wall = timing.get(f"skim@{best['threshold']}", float("nan"))
    cached = figures["label"] == "tour_cached"
    summary = [
        (
            f"{'cached full-size' if cached else 'quick'} fine-tune F1, unpruned",
            f"{figures['block_skim_unpruned']['f1']:.1f}",
        ),
        (
            f"threshold {best['threshold']}: F1 / FLOPs speedup / wall-clock b=1",
            f"{best['f1']:.1f} / {best['flops_speedup']:.2f}x / {wall:.2f}x",
        ),
        ("threshold 0 answers identical to unpruned", str(figures["threshold0_answers_identical"])),
    ]
    plots = [str(Path(figures["plot"]).relative_to(outdir))] if figures.get("plot") else []
    kind = "cached full-size fine-tune, 8 dev examples" if cached else "quick"
    return TourSection(
        title=f"Block-Skim on MiniLM (skim, {kind})",
        figures=figures,
        markdown=markdown(figures, include_plot=False),
        summary=summary,
        plots=plots,
    )
