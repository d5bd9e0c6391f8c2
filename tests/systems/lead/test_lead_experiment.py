"""`frugal lead data | eval | distill` on the quick preset: the figures and report files, BM25's row
against rank_bm25's ranking, a rerun that resumes every student from its checkpoint, the tour
section, and the bad inputs the issue names (K larger than a model's depth, flags a mode never
reads, a user set without files)."""

import dataclasses
import json

import numpy as np
import pytest

from frugal.scripts import cli
from frugal.scripts.systems.lead import command
from frugal.scripts.systems.lead.config import PRESETS, LeadConfig
from frugal.scripts.systems.lead.experiment import TEACHER_LAYERS, load_set


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lead")
    argv = [*QUICK, "--cache-dir", str(root / "cache"), "--outdir", str(root / "out")]
    assert cli.main([*argv, "--json", str(root / "figures.json")]) == 0
    return root, argv, json.loads((root / "figures.json").read_text())


@pytest.mark.slow
def test_distill_reports_every_run_beside_bm25_and_the_teacher(quick_run):
    from rank_bm25 import BM25Okapi

    from frugal.scripts.systems.lead.bm25 import words
    from frugal.scripts.systems.lead.metrics import ranking_metrics

    root, _, figures = quick_run
    config = PRESETS["quick"]
    assert [(r["method"], r["seed"]) for r in figures["runs"]] == [("none", 0), ("lead", 0)]
    assert set(figures["summary"]) == {"none", "lead"} and figures["checks"] == []  # one seed: no verdict
    for run in figures["runs"]:
        assert 0 <= run["mrr@10"] <= run["recall@100"] <= 1
        assert len(run["history"]) >= 1 and run["history"][-1]["step"] == config.steps
    assert "kl_layers" in figures["runs"][1]["history"][-1] and "kl_layers" not in figures["runs"][0]["history"][-1]
    layers = figures["references"]["teacher_layers"]
    assert set(layers) == {"frozen", "heads"} and all(len(v) == TEACHER_LAYERS for v in layers.values())
    # BM25's row is rank_bm25's ranking scored by the metrics
    rs = load_set(dataclasses.replace(config, cache_dir=str(root / "cache")))
    ref = BM25Okapi([words(p) for p in rs.passages])
    ranked = np.stack([np.argsort(-ref.get_scores(words(q)), kind="stable")[:100] for q in rs.test_queries])
    assert figures["references"]["rows"]["bm25"] == pytest.approx(ranking_metrics(ranked, rs.test_relevant))
    assert figures["set"]["test_queries"] == len(rs.test_queries) and rs.meta["held_out"] == ["email"]
    report = (root / "out" / "lead_distill.md").read_text()
    assert "| bm25 |" in report and "student, lead" in report and "Teacher MRR@10 by layer" in report
    assert len(list((root / "out" / "students").iterdir())) == 2


@pytest.mark.slow
def test_a_rerun_resumes_every_student(quick_run, tmp_path):
    root, argv, figures = quick_run
    assert cli.main([*argv, "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    for first, second in zip(figures["runs"], again["runs"]):
        assert second["history"] == []  # restored from the finished checkpoint: no step trained
        assert second["mrr@10"] == pytest.approx(first["mrr@10"], abs=1e-6)


@pytest.mark.slow
def test_data_and_eval_commands(quick_run, capsys):
    root, _, figures = quick_run
    common = ["--preset", "quick", "--cache-dir", str(root / "cache"), "--outdir", str(root / "out")]
    assert cli.main(["lead", "data", *common]) == 0
    data = json.loads((root / "out" / "lead_data.json").read_text())
    assert data["set"] == figures["set"] and data["example"]["positive"] != data["example"]["hard_negative"]
    assert cli.main(["lead", "eval", *common]) == 0
    evaluated = json.loads((root / "out" / "lead_eval.json").read_text())
    for name, row in figures["references"]["rows"].items():
        assert evaluated["rows"][name] == pytest.approx(row)
    assert "teacher MRR@10 by layer" in capsys.readouterr().out


@pytest.mark.slow
def test_negatives_avoid_positives_and_held_out_passages(quick_run):
    from frugal.scripts.systems.lead.experiment import prepare

    root, _, _ = quick_run
    config = dataclasses.replace(PRESETS["quick"], cache_dir=str(root / "cache"))
    prep = prepare(config, fit_teacher=False)
    held_out = {p for relevant in prep.rs.test_relevant for p in relevant}
    negatives = prep.negatives
    assert negatives.shape == (len(prep.rs.train_queries), config.negative_depth)
    assert not held_out & set(negatives.ravel().tolist())
    assert all(pos not in row for pos, row in zip(prep.rs.train_positives, negatives))
    assert all(len(set(row)) == len(row) for row in negatives.tolist())


def test_tour_section_summarizes_the_tour_preset(quick_run, monkeypatch):
    from frugal.scripts.systems.lead import experiment

    _, _, figures = quick_run
    seen = []
    monkeypatch.setattr(experiment, "run_distill", lambda config: seen.append(config) or figures)
    section = command.tour_section(True, None)
    assert seen == [dataclasses.replace(PRESETS["tour"], outdir=None, progress=False)]
    whats = [what for what, _ in section.summary]
    assert whats[1].startswith("MRR@10 BM25 / teacher") and any("lead" in w for w in whats)
    assert "| bm25 |" in section.markdown


QUICK = ["lead", "distill", "--preset", "quick"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*QUICK, "--num-pairs", "3"], "num_pairs=3 is larger than a model's depth"),
        (
            [*QUICK, "--corpus", "c.tsv"],
            "--corpus is not used with --dataset docstrings",
        ),
        ([*QUICK, "--dataset", "user"], "dataset=user needs --beir-folder"),
        ([*QUICK, "--methods", "mse"], "method mse needs the teacher's width"),
        ([*QUICK, "--student", "minilm3", "--width", "64"], "--width is not used"),
        ([*QUICK, "--hard-negatives", "9"], "hard_negatives=9 must be <="),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("frugal: error:") and message in err and "\n" not in err, err


def test_commands_refuse_flags_they_never_read(capsys):
    with pytest.raises(SystemExit):
        cli.main(["lead", "data", "--methods", "lead"])
    assert "unrecognized arguments: --methods" in capsys.readouterr().err


def test_config_defaults_follow_the_reference():
    config = LeadConfig()
    assert (config.layer_temperature, config.temperature, config.resample_every) == (10.0, 1.0, 10)
    assert config.methods == ("none", "response", "lead") and len(config.seeds) >= 3
    assert config.learning_rate == 5e-4 and dataclasses.replace(config, student="minilm3").learning_rate == 1e-4


def test_user_files_with_bad_content_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "corpus.tsv").write_text("")
    (tmp_path / "queries.tsv").write_text("q1\twhat is a matrix\nq2\thow to sort\n")
    (tmp_path / "qrels.txt").write_text("q1 0 p1 1\nq2 0 p1 0\n")
    files = ["--corpus", str(tmp_path / "corpus.tsv"), "--queries", str(tmp_path / "queries.tsv")]
    argv = ["lead", "eval", "--dataset", "user", *files, "--test-qrels", str(tmp_path / "qrels.txt")]
    assert cli.main(argv) == 2
    assert "has no passages" in capsys.readouterr().err
    (tmp_path / "corpus.tsv").write_text("p1\tA matrix is a grid of numbers.\np2\tSorting puts items in order.\n")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "query id 'q2'" in err and "no relevance judgements" in err and err.count("\n") == 1
