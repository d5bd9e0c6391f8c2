"""`frugal bench attention` on the quick preset: the benchmark figures and reports, the training runs
(the evidence task needs the global token; ViL learns digits), flags derived from the config, presets,
and the tour section."""

import dataclasses
import json

import pytest

from frugal.scripts.systems.attention.config import PRESETS, AttentionConfig, EvidenceTaskConfig

QUICK = PRESETS["quick"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`frugal bench attention --preset quick` once for this module (about two minutes on 2 cores)."""
    from frugal.scripts import cli

    outdir = tmp_path_factory.mktemp("attention")
    out = outdir / "figures.json"
    assert cli.main(["bench", "attention", "--preset", "quick", "--outdir", str(outdir), "--json", str(out)]) == 0
    return outdir, json.loads(out.read_text())


def test_the_quick_preset_is_the_old_evidence_test_size():
    """The evidence assertions below were written for exactly this run (seq 64, window 8, 100 steps)."""
    assert QUICK.evidence == EvidenceTaskConfig(
        seq_len=64,
        attention_window=8,
        hidden_size=32,
        layers=2,
        heads=2,
        steps=100,
        batch_size=32,
        num_test=128,
        learning_rate=3e-3,
    )


@pytest.mark.slow
def test_benchmark_rows_checks_and_reports(quick_run):
    outdir, figures = quick_run
    rows = figures["attention"]
    assert [(r["seq_len"], r["num_global"]) for r in rows] == [(256, 1), (512, 1)]
    for r in rows:
        assert r["banded_s"] > 0 and r["dense_s"] > 0  # both fit the 10 GiB limit at these sizes
        assert r["flop_ratio_bound"] > 1 and r["banded_bytes"] < r["dense_bytes"]
        assert r["speedup"] == pytest.approx(r["dense_s"] / r["banded_s"])
    assert figures["torch_layer"]["skipped"].startswith("disabled")
    assert "banded_bytes_per_token_g1" in figures["checks"]
    assert figures["machine"]["cores"] >= 1 and "load_average_before" in figures["machine"]
    assert {"attention.md", "attention.png", "attention.json"} <= {p.name for p in outdir.iterdir()}
    report = (outdir / "attention.md").read_text()
    assert "cores, load average" in report and "## Training on built-in data" in report
    assert "2-core" not in report and "shared with other agents" not in report


@pytest.mark.slow
def test_longformer_learns_the_evidence_task_and_needs_the_global_token(quick_run):
    _, figures = quick_run
    with_global, window_only = figures["training"]["longformer_evidence"]
    assert with_global["use_global"] and not window_only["use_global"]
    assert with_global["last_loss"] < 0.7 * with_global["first_loss"]
    assert with_global["test_accuracy"] > 0.6  # chance is 0.25
    # the evidence lies beyond every window of CLS: without global tokens the reader stays near chance
    assert window_only["test_accuracy"] < 0.45
    assert with_global["test_accuracy"] - window_only["test_accuracy"] > 0.2
    # a loss per step (log_every=1), thinned to about 50 points in the figures
    assert len(with_global["loss_curve"]) == 50 and with_global["resumed_from"] == 0


@pytest.mark.slow
def test_vil_learns_digits(quick_run):
    _, figures = quick_run
    vil = figures["training"]["vil"]
    assert vil["steps"] == QUICK.vil.steps and vil["chance"] == pytest.approx(0.1)
    assert vil["test_accuracy"] > 0.4  # four times chance after 60 steps
    assert vil["last_loss"] < vil["first_loss"]


def _config_for(argv):
    from frugal.scripts import cli
    from frugal.scripts.configs import config_from_flags

    args = cli.build_parser().parse_args(["bench", "attention", *argv])
    assert args._command.path == ("bench", "attention")
    return config_from_flags(args, AttentionConfig, PRESETS)


def test_flags_come_from_the_config_fields():
    assert _config_for([]) == PRESETS["full"] == AttentionConfig()
    config = _config_for(
        [
            "--preset",
            "tour",
            "--seq-lens",
            "1024",
            "4096",
            "--globals",
            "1",
            "8",
            "--dense-limit-gib",
            "2.5",
            "--no-torch",
            "--tasks",
            "evidence",
            "vil",
            "--evidence-steps",
            "7",
            "--vil-dataset",
            "shapes",
        ]
    )
    assert config.seq_lens == (1024, 4096) and config.num_globals == (1, 8)
    assert config.dense_memory_limit_gib == 2.5 and config.torch is False
    assert config.tasks == ("evidence", "vil")
    assert config.evidence.steps == 7 and config.evidence.seq_len == PRESETS["tour"].evidence.seq_len
    assert config.vil.dataset == "shapes"
    assert _config_for(["--tasks"]).tasks == ()  # benchmark only
    assert _config_for(["--preset", "quick"]) == QUICK


def test_bad_values_end_in_one_line_and_status_2(capsys, tmp_path):
    from frugal.scripts import cli

    argv = ["bench", "attention", "--preset", "quick", "--outdir", str(tmp_path)]
    assert cli.main([*argv, "--evidence-seq-len", "16"]) == 2
    err = capsys.readouterr().err
    assert "attention_window" in err and "--evidence-seq-len" in err and err.count("\n") == 1
    assert cli.main([*argv, "--window", "0"]) == 2
    assert "window=0" in capsys.readouterr().err


@pytest.mark.slow
def test_tour_section_runs_the_tour_preset(tmp_path, monkeypatch, quick_run):
    """The section runs `run` on the tour preset and summarizes it; the quick run's figures stand in."""
    from frugal.scripts.systems.attention import command, experiment

    _, figures = quick_run
    seen = []

    def fake_run(config):
        seen.append(config)
        return figures

    monkeypatch.setattr(experiment, "run", fake_run)
    section = command.tour_section(True, tmp_path)
    assert seen == [dataclasses.replace(PRESETS["tour"], outdir=str(tmp_path / "attention"))]
    assert PRESETS["tour"].tasks == ("evidence",) and PRESETS["tour"].torch is False
    assert (tmp_path / "attention.png").exists() and section.plots == ["attention.png"]
    whats = [what for what, _ in section.summary]
    assert whats[0] == "banded vs dense at n=512"
    assert "Longformer evidence task n=64 accuracy (CLS global)" in whats and "ViL test accuracy" in whats
    assert "## Attention (q, k, v given)" in section.markdown
