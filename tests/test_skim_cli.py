"""`frugal skim` options map onto SkimExperimentConfig, and the built-in set choice keys the weight cache."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from frugal.scripts.commands import skim as skim_command
from frugal.scripts.skim_experiments import SkimExperimentConfig, cache_path


def _parse(argv):
    parser = argparse.ArgumentParser()
    skim_command.add_arguments(parser)
    return skim_command._config(parser.parse_args(argv))


def test_defaults_are_the_one_fact_set_in_full_windows():
    config = _parse([])
    assert (config.distractors, config.max_seq_len, config.context_tokens) == (0, 512, (440, 490))


def test_harder_set_options(capsys):
    config = _parse(["--distractors", "3", "--max-seq-len", "384", "--context-tokens", "300,360", "--no-vanilla"])
    assert (config.distractors, config.max_seq_len, config.context_tokens) == (3, 384, (300, 360))
    assert not config.train_vanilla
    with pytest.raises(SystemExit):
        _parse(["--context-tokens", "300"])
    assert "--context-tokens: '300' is not LO,HI token counts" in capsys.readouterr().err
    with pytest.raises(ValueError, match="distractors"):
        _parse(["--distractors", "-1"])
    with pytest.raises(ValueError, match="max_seq_len"):
        _parse(["--max-seq-len", "500"])


def test_cache_key_follows_the_data_recipe_not_the_evaluation():
    base = SkimExperimentConfig(cache_dir="cache")
    assert cache_path(base, skim=True) != cache_path(dataclasses.replace(base, distractors=3), skim=True)
    assert cache_path(base, skim=True) != cache_path(base, skim=False)
    assert cache_path(base, skim=True) == cache_path(dataclasses.replace(base, thresholds=(0.5,), n_dev=7), skim=True)


def _tiny_config(tmp_path, **overrides):
    return SkimExperimentConfig(
        **{
            **dict(
                n_train=40,
                n_dev=6,
                max_seq_len=128,
                context_tokens=(90, 110),
                train_steps=2,
                batch_size=4,
                predictor_layers=(0,),
                refine_layers=(0,),
                refine_epochs=1,
                refine_windows=8,
                question_fit_windows=20,
                selection_windows=10,
                match_fit_steps=20,
                thresholds=(0.0, 0.5),
                paper_thresholds=(0.5,),
                train_vanilla=False,
                timing_examples=2,
                timing_repeats=1,
                eval_batch_size=8,
                lock_timeout_s=1.0,
                cache_dir=str(tmp_path / "cache"),
                outdir=str(tmp_path / "out"),
                label="test",
                progress=False,
                lower_priority=False,
            ),
            **overrides,
        }
    )


def test_match_pipeline_end_to_end_and_from_cache(tmp_path):
    """Tiny real-MiniLM run of the default pipeline: joint fine-tune, refine, match-head fit, threshold
    selection, pruned sweeps beside the paper's predictor, reports; then the same run from the cache."""
    from frugal.scripts.skim_experiments import fully_cached, run

    config = _tiny_config(tmp_path)
    assert not fully_cached(config, vanilla=False)
    first = run(config)
    assert first["threshold0_answers_identical"] is True
    (selected,) = first["selected_thresholds"]["per_layer"].values()
    assert 0 <= selected <= 1
    assert [r["threshold"] for r in first["sweep"]] == [0.0, 0.5, (selected,)]
    assert [r["threshold"] for r in first["paper_predictor_sweep"]] == [0.5]
    assert all(r["flops_speedup"] > 0 for r in first["sweep"] + first["paper_predictor_sweep"])
    assert "diagonal+question+match" in (tmp_path / "out" / "skim_test.md").read_text()
    assert fully_cached(config, vanilla=False)
    again = run(config)
    assert again["train"]["block_skim"]["from_cache"]
    assert [(r["f1"], r["flops_speedup"]) for r in again["sweep"]] == [
        (r["f1"], r["flops_speedup"]) for r in first["sweep"]
    ]


def test_question_feature_pipeline_end_to_end(tmp_path):
    """The other extension: widened linear classifiers fitted, a threshold picked, answers at 0 unchanged."""
    from frugal.scripts.skim_experiments import run

    figures = run(
        _tiny_config(
            tmp_path, predictor_features="diagonal+question", train_vanilla=False, timing_examples=0, diagnostics=False
        )
    )
    assert figures["threshold0_answers_identical"] is True
    fit = figures["train"]["block_skim"]["log"]["question_predictors"]["fit"]["0"]
    assert fit["loss_end"] < fit["loss_start"]  # the full-batch fit lowered the weighted CE
    assert "paper_predictor_sweep" not in figures
