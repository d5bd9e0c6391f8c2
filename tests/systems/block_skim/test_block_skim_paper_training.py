"""`--predictor-features diagonal` is the paper's training: auto train_steps / refine_epochs resolve to the
joint-only recipe (PAPER_TRAIN_STEPS, no refit), the extended predictors keep their numbers and cache keys,
the skim-loss curve says whether the skim loss converged, and the checks say how far a run is from 2.5x."""

from __future__ import annotations

import json
import math

import pytest

from frugal.scripts import cli
from frugal.scripts.systems.block_skim import training
from frugal.scripts.systems.block_skim.config import PAPER_TRAIN_STEPS, PRESETS, SkimConfig
from frugal.scripts.systems.block_skim.evaluation import (
    CONVERGENCE_TOLERANCE,
    checks,
    curve_sentence,
    markdown,
    shortfall_sentence,
    skim_loss_curve,
)

# Captured from the code before train_steps / refine_epochs became auto (None): the default extended-predictor
# run must keep restoring the same Trainer workdirs.
KEYS_BEFORE = {
    "recipe_skim": "c2d666288649fbd1",
    "recipe_vanilla": "d58849e602cc7341",
    "refine": "aa22ae47ec565663",
    "question": "9ea70ba7a23194b0",
}


def _parse(argv):
    from frugal.scripts.configs import config_from_flags

    return config_from_flags(cli.build_parser().parse_args(["skim", *argv]), SkimConfig, PRESETS)


def test_auto_steps_and_refine_epochs_resolve_by_predictor_features():
    extended = _parse([])
    assert (extended.train_steps, extended.refine_epochs) == (None, None)  # auto
    assert (extended.steps, extended.refine) == (100, 20)
    paper = _parse(["--predictor-features", "diagonal"])
    assert (paper.steps, paper.refine) == (PAPER_TRAIN_STEPS, 0)
    assert paper == SkimConfig(predictor_features="diagonal")
    # the JSON's config shows the numbers that ran
    assert (paper.resolved()["train_steps"], paper.resolved()["refine_epochs"]) == (PAPER_TRAIN_STEPS, 0)
    assert (extended.resolved()["train_steps"], extended.resolved()["refine_epochs"]) == (100, 20)
    # explicit values win, in both modes; `none` asks for auto again
    given = _parse(["--predictor-features", "diagonal", "--train-steps", "50", "--refine-epochs", "3"])
    assert (given.steps, given.refine) == (50, 3)
    assert (_parse(["--train-steps", "7", "--refine-epochs", "0"]).steps, _parse(["--refine-epochs", "0"]).refine) == (
        7,
        0,
    )
    assert _parse(["--preset", "quick", "--refine-epochs", "none", "--predictor-features", "diagonal"]).refine == 0
    # the presets keep their explicit values, whatever the predictor
    for name, steps, refine in (("quick", 2, 1), ("tour", 24, 0)):
        for features in ([], ["--predictor-features", "diagonal"]):
            config = _parse(["--preset", name, *features])
            assert (config.train_steps, config.refine_epochs, config.steps, config.refine) == (
                steps,
                refine,
                steps,
                refine,
            )
    with pytest.raises(ValueError, match="train_steps"):
        SkimConfig(train_steps=0)
    with pytest.raises(ValueError, match="refine_epochs"):
        SkimConfig(refine_epochs=-1)


def test_refine_flags_are_inactive_when_the_resolved_refinement_is_off():
    with pytest.raises(ValueError, match="--refine-windows is not used with --predictor-features diagonal"):
        _parse(["--predictor-features", "diagonal", "--refine-windows", "100"])
    with pytest.raises(ValueError, match="--refine-layers is not used with --refine-epochs 0"):
        _parse(["--refine-epochs", "0", "--refine-layers", "0"])
    config = _parse(["--predictor-features", "diagonal", "--refine-epochs", "2", "--refine-windows", "100"])
    assert (config.refine, config.refine_windows) == (2, 100)
    assert "refine_windows" not in _parse([]).inactive_fields()


def test_resolved_values_reach_the_cache_keys_and_the_extended_keys_are_unchanged():
    default = SkimConfig()
    assert training.recipe_key(default, True) == KEYS_BEFORE["recipe_skim"]
    assert training.recipe_key(default, False) == KEYS_BEFORE["recipe_vanilla"]
    assert training.refine_key(default) == KEYS_BEFORE["refine"]
    assert training.question_key(default) == KEYS_BEFORE["question"]
    explicit = SkimConfig(train_steps=100, refine_epochs=20)
    assert training.recipe_key(explicit, True) == KEYS_BEFORE["recipe_skim"]
    assert training.refine_key(explicit) == KEYS_BEFORE["refine"]
    # the paper's recipe is keyed by its resolved steps (the joint fine-tune does not depend on the features)
    paper = SkimConfig(predictor_features="diagonal")
    assert training.recipe_key(paper, True) == training.recipe_key(SkimConfig(train_steps=PAPER_TRAIN_STEPS), True)
    assert training.recipe_key(paper, True) != KEYS_BEFORE["recipe_skim"]
    assert training.refine_steps(paper) == 0 and training.refine_steps(default) == 20 * 38


def test_warmup_schedule_uses_the_resolved_steps(monkeypatch):
    import optax

    seen = []
    real = optax.warmup_cosine_decay_schedule

    def spy(init, peak, warmup, decay_steps, end):
        seen.append((warmup, decay_steps))
        return real(init, peak, warmup, decay_steps, end)

    monkeypatch.setattr(optax, "warmup_cosine_decay_schedule", spy)
    training.make_optimizer(SkimConfig(predictor_features="diagonal"))
    training.make_optimizer(SkimConfig())
    assert seen == [(PAPER_TRAIN_STEPS // 10, PAPER_TRAIN_STEPS)] * 2 + [(10, 100)] * 2


def _history(skim, start=10, every=10):
    return [
        {"step": start + every * i, "loss": 1.0 + 0.1 * v, "qa_loss": 1.0 + 0.01 * i, "skim_loss": v, "seconds": i}
        for i, v in enumerate(skim)
    ]


def test_skim_loss_curve_windows_and_convergence():
    # converging: an exponential decay to a floor, 50 logged points -> windows of 10
    values = [0.5 + 4.0 * math.exp(-i / 5) for i in range(50)]
    curve = skim_loss_curve(_history(values))
    assert curve["step"] == list(range(10, 510, 10)) and curve["skim_loss"] == values  # raw, nothing smoothed
    assert curve["qa_loss"] == [1.0 + 0.01 * i for i in range(50)]
    assert curve["window"] == 10
    assert curve["last_mean"] == pytest.approx(sum(values[40:]) / 10)
    assert curve["previous_mean"] == pytest.approx(sum(values[30:40]) / 10)
    last, previous = curve["last_mean"], curve["previous_mean"]
    assert curve["relative_change"] == pytest.approx((last - previous) / previous)
    assert abs(curve["relative_change"]) < CONVERGENCE_TOLERANCE and curve["converged"] is True
    assert "so converged" in curve_sentence(curve)
    # still falling: a straight line down loses ~20% between the last two fifths
    falling = [10.0 - 0.15 * i for i in range(50)]
    curve = skim_loss_curve(_history(falling))
    assert curve["relative_change"] == pytest.approx((sum(falling[40:]) - sum(falling[30:40])) / sum(falling[30:40]))
    assert curve["relative_change"] < -CONVERGENCE_TOLERANCE and curve["converged"] is False
    assert "not converged" in curve_sentence(curve)
    # rising counts too (|change|)
    assert skim_loss_curve(_history([1.0 + 0.05 * i for i in range(20)]))["converged"] is False
    # 12 points: window floor(2.4) = 2
    curve = skim_loss_curve(_history([3.0] * 8 + [2.0, 2.0, 1.0, 1.0]))
    assert (curve["window"], curve["last_mean"], curve["previous_mean"]) == (2, 1.0, 2.0)
    assert curve["relative_change"] == pytest.approx(-0.5) and not curve["converged"]
    # at least one point per window: 3 points -> windows of one
    curve = skim_loss_curve(_history([2.0, 1.0, 1.02]))
    assert (curve["window"], curve["last_mean"], curve["previous_mean"]) == (1, 1.02, 1.0)
    assert curve["converged"] is True
    # one point (the quick preset): no previous window, so no verdict
    curve = skim_loss_curve(_history([0.7], start=2))
    assert (curve["step"], curve["window"], curve["last_mean"]) == ([2], 1, 0.7)
    assert curve["previous_mean"] is None and curve["relative_change"] is None and curve["converged"] is False
    assert "Too few logged points" in curve_sentence(curve)
    assert skim_loss_curve([])["step"] == [] and not skim_loss_curve([])["converged"]
    # records without a skim loss (a vanilla fine-tune) are not part of the curve
    assert skim_loss_curve([{"step": 10, "loss": 1.0, "qa_loss": 1.0}])["step"] == []


def _figures(sweep, unpruned=90.0, predictors=None):
    return {
        "block_skim_unpruned": {"f1": unpruned, "exact_match": unpruned},
        "sweep": [{"threshold": t, "f1": f1, "flops_speedup": s} for t, f1, s in sweep],
        "predictors": predictors or {},
    }


def test_checks_say_how_far_from_the_target():
    short = checks(_figures([(0.0, 90.0, 1.0), (0.1, 89.5, 1.8), (0.5, 80.0, 2.8), (0.7, 70.0, 3.2)]))
    assert short["flops_speedup_at_least_2_5"] is False and short["flops_speedup"] == 1.8
    gap = short["short_of_target"]
    assert gap["target_flops_speedup"] == 2.5 and gap["best_flops_speedup_within_1_f1"] == 1.8
    assert gap["flops_speedup_missing"] == pytest.approx(0.7)
    assert gap["fastest_at_or_above_target"] == {"threshold": 0.7, "flops_speedup": 3.2, "f1": 70.0, "f1_loss": 20.0}
    assert "1.80x (0.70x short)" in shortfall_sentence(gap) and "(0.7, 3.20x) loses 20.00 F1" in shortfall_sentence(gap)
    # nothing within 1 point, nothing reaching 2.5x
    none = checks(_figures([(0.0, 90.0, 1.0), (0.5, 85.0, 2.0)]))["short_of_target"]
    assert none["best_flops_speedup_within_1_f1"] is None and none["flops_speedup_missing"] is None
    assert none["fastest_at_or_above_target"] is None
    assert "no pruning threshold keeps F1" in shortfall_sentence(none)
    assert "no threshold swept reaches 2.5x" in shortfall_sentence(none)
    # met: nothing to explain
    met = checks(_figures([(0.0, 90.0, 1.0), (0.1, 89.5, 2.9)]))
    assert met["flops_speedup_at_least_2_5"] is True and "short_of_target" not in met


def test_paper_training_quick_run_writes_the_curve_and_its_plot(tmp_path):
    """A quick `--predictor-features diagonal` run (auto refine_epochs: none): joint fine-tune only, the curve
    in the JSON, skim_quick_loss.png, the diagnostics on every predictor layer; again from the cache."""
    from frugal.scripts.systems.block_skim.experiment import run
    from frugal.scripts.systems.block_skim.training import fully_cached

    config = _parse(
        [
            "--preset",
            "quick",
            "--predictor-features",
            "diagonal",
            "--refine-epochs",
            "none",
            "--predictor-layers",
            "0",
            "1",
            "--timing-examples",
            "0",
            "--outdir",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert (config.steps, config.refine, config.label) == (2, 0, "quick")
    first = run(config)
    log = first["train"]["block_skim"]["log"]
    assert "refine" not in log and "question_predictors" not in log
    assert [p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").iterdir()] == ["skim"]
    curve = first["skim_loss_curve"]
    assert curve["step"] == [r["step"] for r in log["joint"]] == [2]
    assert curve["skim_loss"] == [r["skim_loss"] for r in log["joint"]]
    assert sorted(first["predictors"]) == ["0", "1"]  # every predictor layer, none fitted afterwards
    out = tmp_path / "out"
    saved = json.loads((out / "skim_quick.json").read_text())
    assert saved["skim_loss_curve"]["step"] == [2] and saved["skim_loss_curve"]["converged"] is False
    assert (saved["config"]["train_steps"], saved["config"]["refine_epochs"]) == (2, 0)
    assert (out / "skim_quick_loss.png").is_file() and first["loss_plot"] == str(out / "skim_quick_loss.png")
    report = (out / "skim_quick.md").read_text()
    assert "trained the paper's way, through the joint loss alone for 2 steps" in report
    assert "## Skim loss of the joint fine-tune" in report and "(skim_quick_loss.png)" in report
    assert "per-layer answer-block recall and kept fraction" in report
    if "short_of_target" in first["checks"]:
        assert "Short of the 2.5x FLOPs target" in report
    assert fully_cached(config, vanilla=False)
    (out / "skim_quick_loss.png").unlink()
    again = run(config)
    assert again["train"]["block_skim"]["from_cache"]
    assert again["skim_loss_curve"] == json.loads(json.dumps(curve))  # read back from metrics.jsonl
    assert (out / "skim_quick_loss.png").is_file()
    # the report of figures without a curve (an older JSON) still renders
    assert "Skim loss" not in markdown({**again, "skim_loss_curve": None}, include_plot=False)
