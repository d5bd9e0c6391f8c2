"""`frugal skim` flags come from SkimConfig, presets pick the size, the built-in set choice keys the Trainer
workdir cache, and the whole pipeline (fine-tune, refine, predictor fit, sweeps, reports) runs on tiny data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from frugal.scripts import cli
from frugal.scripts.data import user_cache_dir
from frugal.scripts.systems.block_skim import command as skim_command
from frugal.scripts.systems.block_skim.config import PRESETS, SkimConfig
from frugal.scripts.systems.block_skim.training import fine_tune_workdir


def _parse(argv):
    """The config `frugal skim ARGV` runs (parsed by the real `frugal` parser)."""
    from frugal.scripts.configs import config_from_flags

    return config_from_flags(cli.build_parser().parse_args(["skim", *argv]), SkimConfig, PRESETS)


def test_defaults_are_the_one_fact_set_in_full_windows():
    config = _parse([])
    assert config == PRESETS["full"] == SkimConfig()
    assert (config.distractors, config.max_seq_len, config.context_tokens) == (0, 512, (440, 490))


def test_harder_set_options(capsys):
    config = _parse(["--distractors", "3", "--max-seq-len", "384", "--context-tokens", "300", "360", "--no-vanilla"])
    assert (config.distractors, config.max_seq_len, config.context_tokens) == (3, 384, (300, 360))
    assert not config.train_vanilla
    with pytest.raises(ValueError, match="context_tokens=.*two token counts"):
        _parse(["--context-tokens", "300"])
    with pytest.raises(SystemExit):
        _parse(["--context-tokens", "300,360"])
    assert "--context-tokens: invalid int value" in capsys.readouterr().err
    with pytest.raises(ValueError, match="distractors"):
        _parse(["--distractors", "-1"])
    with pytest.raises(ValueError, match="max_seq_len"):
        _parse(["--max-seq-len", "500"])


def test_every_field_is_a_flag_and_renamed_ones_keep_their_old_names():
    parser = cli.build_parser()
    sub = parser.parse_args(["skim"])
    options = {flag.option for flag in sub._config_flags}
    cli_fields = {f.name for f in dataclasses.fields(SkimConfig) if f.metadata.get("cli", True)}
    assert len(options) == len(cli_fields)
    for old in ("--train-steps", "--n-train", "--fit-windows", "--thresholds", "--prune-layers", "--cache-dir"):
        assert old in options
    config = _parse(["--thresholds", "0", "0.2", "--prune-layers", "0", "--fit-windows", "50", "--cache-dir", "none"])
    assert (config.thresholds, config.prune_layers, config.question_fit_windows) == ((0.0, 0.2), (0,), 50)
    assert config.cache_root() is None


def test_presets_pick_the_size_and_flags_override_them():
    quick = _parse(["--preset", "quick"])
    assert quick == PRESETS["quick"]
    # train_steps is None (auto) in `full`: compare the resolved steps
    assert quick.max_seq_len == 128 and quick.steps < PRESETS["tour"].steps < PRESETS["full"].steps
    assert _parse(["--preset", "tour", "--train-steps", "7"]) == dataclasses.replace(PRESETS["tour"], train_steps=7)
    # the tour's section is a real fine-tune of the whole MiniLM on short windows, pruned after layer 0
    tour = PRESETS["tour"]
    assert tour.max_seq_len <= 256 and tour.prune_layers == (0,) and tour.cache_dir == "auto"


def test_cache_dir_auto_is_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "frugal"
    assert SkimConfig().cache_root() == tmp_path / "frugal" / "skim"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert SkimConfig().cache_root() == tmp_path / "home" / ".cache" / "frugal" / "skim"
    assert SkimConfig(cache_dir="elsewhere").cache_root().name == "elsewhere"


def test_cache_key_follows_the_data_recipe_not_the_evaluation():
    base = SkimConfig(cache_dir="cache")
    workdir = fine_tune_workdir(base, skim=True)
    assert workdir != fine_tune_workdir(dataclasses.replace(base, distractors=3), skim=True)
    assert workdir != fine_tune_workdir(base, skim=False)
    assert workdir == fine_tune_workdir(dataclasses.replace(base, thresholds=(0.5,), n_dev=7), skim=True)
    assert workdir.parent.name == "cache" and workdir.name.startswith("skim-")
    assert fine_tune_workdir(dataclasses.replace(base, cache_dir=None), skim=True) is None


def test_bench_lock_lives_in_the_user_cache_directory(monkeypatch, tmp_path):
    from frugal.scripts.systems.block_skim.evaluation import bench_lock, bench_lock_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bench_lock_path() == tmp_path / "frugal" / "frugal-bench.lock"
    with bench_lock(1.0) as held:
        assert held
        assert bench_lock_path().is_file()


def _tiny_config(tmp_path, **overrides):
    fields = dict(cache_dir=str(tmp_path / "cache"), outdir=str(tmp_path / "out"), label="test")
    return dataclasses.replace(PRESETS["quick"], **{**fields, **overrides})


def test_match_pipeline_end_to_end_and_from_cache(tmp_path):
    """Tiny real-MiniLM run of the default pipeline: joint fine-tune, refine, match-head fit, threshold
    selection, pruned sweeps beside the paper's predictor, reports; then the same run from the cache."""
    from frugal.scripts.systems.block_skim.experiment import run
    from frugal.scripts.systems.block_skim.training import fully_cached

    config = _tiny_config(tmp_path)
    assert not fully_cached(config, vanilla=False)
    first = run(config)
    assert first["threshold0_answers_identical"] is True
    (selected,) = first["selected_thresholds"]["per_layer"].values()
    assert 0 <= selected <= 1
    assert [r["threshold"] for r in first["sweep"]] == [0.0, 0.5, (selected,)]
    assert [r["threshold"] for r in first["paper_predictor_sweep"]] == [0.5]
    assert all(r["flops_speedup"] > 0 for r in first["sweep"] + first["paper_predictor_sweep"])
    report = (tmp_path / "out" / "skim_test.md").read_text()
    assert "diagonal+question+match" in report
    assert "cores, load average" in report and "shared with other agents" not in report
    assert first["timing"]["machine"]["cores"] >= 1
    log = first["train"]["block_skim"]["log"]
    assert [r["step"] for r in log["joint"]] == [config.train_steps]
    assert not log["from_cache"] and not log["question_predictors"]["from_cache"]
    # every training run left a Trainer workdir: orbax checkpoint at its last step and metrics.jsonl
    kinds = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").iterdir())
    assert kinds == ["skim", "skim-question", "skim-refined"]
    for workdir in (tmp_path / "cache").iterdir():
        assert (workdir / "metrics.jsonl").is_file() and any((workdir / "checkpoints").iterdir())
    assert fully_cached(config, vanilla=False)
    again = run(config)
    assert again["train"]["block_skim"]["from_cache"]
    assert again["train"]["block_skim"]["log"]["from_cache"]
    assert again["train"]["block_skim"]["log"]["joint"] == log["joint"]  # read back from metrics.jsonl
    assert [(r["f1"], r["flops_speedup"]) for r in again["sweep"]] == [
        (r["f1"], r["flops_speedup"]) for r in first["sweep"]
    ]
    assert json.loads((tmp_path / "out" / "skim_test.json").read_text())["train"]["block_skim"]["from_cache"]


def test_question_feature_pipeline_end_to_end(tmp_path):
    """The other extension: widened linear classifiers fitted, a threshold picked, answers at 0 unchanged."""
    from frugal.scripts.systems.block_skim.experiment import run

    figures = run(
        _tiny_config(
            tmp_path, predictor_features="diagonal+question", train_vanilla=False, timing_examples=0, diagnostics=False
        )
    )
    assert figures["threshold0_answers_identical"] is True
    fit = figures["train"]["block_skim"]["log"]["question_predictors"]["fit"]["0"]
    assert fit["loss_end"] < fit["loss_start"]  # the full-batch fit lowered the weighted CE
    assert "paper_predictor_sweep" not in figures


def test_tour_section_reports_the_headline(tmp_path, monkeypatch):
    """The tour section on the quick preset (its numbers are meaningless at this size) with an empty cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(PRESETS, "tour", PRESETS["quick"])
    section = skim_command.tour_section(True, tmp_path)
    assert section.figures["label"] == "quick"
    rows = dict(section.summary)
    assert rows["threshold 0 answers identical to unpruned"] == "True"
    (target,) = [v for k, v in rows.items() if k.startswith("target")]
    best = skim_command.headline(section.figures)
    met = best is not None and best["flops_speedup"] >= skim_command.TOUR_MIN_FLOPS_SPEEDUP
    assert target == "met" if met else target.startswith("not met")
    assert (tmp_path / section.plots[0]).is_file()


def test_fine_tune_freezes_embeddings_and_its_workdir_is_the_cache(tmp_path):
    """The joint fine-tune is a Trainer run: embeddings stay bit-identical (not differentiated), the rest moves,
    and the finished workdir is restored with zero steps and the same weights."""
    import numpy as np
    from flax import nnx

    from frugal.scripts.systems.block_skim.qa_data import featurize, make_fact_qa, plain_tokenizer
    from frugal.scripts.systems.block_skim.training import fine_tune, fresh_model

    config = _tiny_config(tmp_path)
    tok = plain_tokenizer()
    feats = featurize(
        make_fact_qa(8, context_tokens=config.context_tokens, tokenizer=tok), tok, max_seq_len=config.max_seq_len
    )
    before = fresh_model(config, skim=True)
    pretrained = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(before, nnx.Param))}
    workdir = tmp_path / "work"
    trained, result = fine_tune(before, feats, config, skim=True, workdir=workdir)
    assert result.start_step == 0 and [r["step"] for r in result.history] == [config.train_steps]
    after = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(trained, nnx.Param))}
    embeddings = [k for k in after if "embeddings" in k]
    assert embeddings and all(np.array_equal(after[k], pretrained[k]) for k in embeddings)
    moved = [k for k in after if "embeddings" not in k and not np.array_equal(after[k], pretrained[k])]
    assert any("layers" in k for k in moved) and any("predictors" in k for k in moved)

    def explode():
        raise AssertionError("a finished run must not ask for batches")

    again, restored = fine_tune(fresh_model(config, skim=True), explode, config, skim=True, workdir=workdir)
    assert restored.start_step == config.train_steps and restored.history == []
    for k, v in nnx.to_flat_state(nnx.state(again, nnx.Param)):
        np.testing.assert_array_equal(np.asarray(v), after[k])


def test_tour_section_evaluates_a_cached_full_run(tmp_path, monkeypatch):
    """When the full preset's workdirs are all finished, the tour restores them instead of fine-tuning."""
    from frugal.scripts.systems.block_skim.experiment import run

    full = _tiny_config(tmp_path, label="full", timing_examples=0, diagnostics=False)
    monkeypatch.setitem(PRESETS, "full", full)
    assert skim_command.cached_tour_config(tmp_path / "tour") is None
    run(full)
    config = skim_command.cached_tour_config(tmp_path / "tour")
    assert config is not None and config.n_dev == 8 and config.cache_root() == full.cache_root()
    section = skim_command.tour_section(True, tmp_path)
    assert section.figures["label"] == "tour_cached"
    assert section.figures["train"]["block_skim"]["from_cache"]
    assert section.summary[0][0].startswith("full-size fine-tune (cached")
